"""`wms pipeline batches`: every pushed batch and what became of it, from the dataset store's
batch records (wms.batches); a command of the `wms pipeline` group."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import typer

from wms.batches import STATUSES
from wms.cli._common import console, state
from wms.errors import UsageError
from wms.times import parse_time


def batches(
    ctx: typer.Context,
    status: list[str] = typer.Option(
        [],
        "--status",
        help=f"Only batches with this status (repeatable): {', '.join(STATUSES)}.",
    ),
    days: float | None = typer.Option(
        None, "--days", min=0, help="Only batches whose record changed in the last DAYS days."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the records as JSON."),
) -> None:
    """List every pushed batch and what became of it, oldest first, with a count per status.

    Each data-branch commit a pipeline run or the sweeper took on has a record in the dataset
    store (store.url): its branch, status, attempts, when it last changed and what its last
    run said. `running` with "died" means that run started longer ago than a run lasts
    (compute.max_hold_hours and one lease): the sweeper runs the batch again, or, after 3
    attempts, gives it up. Reads every record (one request each on S3).
    """
    from wms.batches import BatchLedger, died
    from wms.data.store import open_store

    unknown = sorted(set(status) - set(STATUSES))
    if unknown:
        raise UsageError(f"unknown --status {', '.join(unknown)}; use one of: {', '.join(STATUSES)}")
    project = state(ctx).project()
    store = open_store(project)
    records = BatchLedger(store.fs, store.root).all()
    since = datetime.now(UTC) - timedelta(days=days) if days is not None else None
    shown = sorted(
        (r for r in records if (not status or r.get("status") in status) and _changed_since(r, since)),
        key=lambda r: str(r.get("updated_at") or ""),
    )
    longest = project.settings.compute.longest_run
    if as_json:
        print(json.dumps([r | {"died": died(r, longest)} for r in shown], indent=2))
        return
    if not records:
        console.print(
            f"no batch records in {store.url} yet: a pipeline run on a data branch, or `wms pipeline "
            "sweep`, writes one for each pushed batch",
            highlight=False,
            soft_wrap=True,
        )
        return
    if shown:
        console.print(
            f"{'changed (UTC)':<16}  {'status':<16} branch  commit  runs", style="dim", highlight=False
        )
    for r in shown:  # two lines each, whatever the terminal's width: the batch, then its last word
        label = str(r.get("status") or "?") + (" (died)" if died(r, longest) else "")
        changed = str(r.get("updated_at") or "")[:16].replace("T", " ")
        line = f"{changed:<16}  {label:<16} {r.get('branch') or '?'}  {str(r.get('sha'))[:12]}  "
        console.print(f"{line}runs: {r.get('attempts') or 0}", highlight=False, soft_wrap=True)
        if r.get("summary"):
            console.print(f"{'':<18}{r['summary']}", highlight=False, soft_wrap=True)
    counts = Counter(str(r.get("status")) for r in shown)
    tally = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
    others = len(shown) - sum(counts[s] for s in STATUSES)
    tally += f", {others} other" if others else ""
    console.print(f"{len(shown)} of {len(records)} batch(es){': ' + tally if tally else ''}", highlight=False)


def _changed_since(record: dict[str, Any], since: datetime | None) -> bool:
    if since is None:
        return True
    changed = parse_time(record.get("updated_at"))
    return changed is None or changed >= since  # no time on it: shown rather than hidden
