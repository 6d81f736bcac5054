"""`wms pipeline batches`: every pushed batch and what became of it, as an operator asks after a
month of pushes (the records the pipeline and the sweeper keep in the dataset store)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from wms.batches import MAX_ATTEMPTS

NOW = datetime.now(UTC)


def _at(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat(timespec="seconds")


def _records(project: Path) -> dict[str, dict[str, Any]]:
    """Five batches over two weeks, written as the ledger writes them."""
    records = {
        "promoted": {"status": "promoted", "summary": "promoted version 3 (Dice 0.91)", "attempts": 1},
        "rejected": {"status": "rejected", "summary": "the new pairs did not pass validation", "attempts": 0},
        "failed": {"status": "failed", "summary": "failed at train: out of memory", "attempts": 1},
        "alive": {"status": "running", "summary": "", "attempts": 1, "started_at": _at(1)},
        "dead": {"status": "running", "summary": "", "attempts": MAX_ATTEMPTS, "started_at": _at(20)},
    }
    folder = project / ".wms" / "store" / "batches"
    folder.mkdir(parents=True)
    for n, (name, record) in enumerate(records.items()):
        sha = f"{n:x}" * 40
        record |= {"branch": f"data/2026120{n}-{name}", "sha": sha, "updated_at": _at(24 * 14 - n * 80)}
        (folder / f"{sha}.json").write_text(json.dumps(record))
    (folder / "cut-short.json").write_text("{")  # a record cut short is left out, not a traceback
    return records


def test_every_batch_is_listed_oldest_first_with_its_status_and_a_count(
    project_dir: Path, cli: Callable[..., Any]
) -> None:
    _records(project_dir)

    shown = cli("pipeline", "batches")

    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    order = [next(i for i, line in enumerate(lines) if f"-{name}" in line) for name in ("promoted", "dead")]
    assert order == sorted(order)  # oldest change first
    assert "out of memory" in shown.output
    [dead] = [line for line in lines if "-dead" in line]
    assert "running (died)" in dead  # started 20 h ago, longer than a run lasts
    [alive] = [line for line in lines if "-alive" in line]
    assert "(died)" not in alive
    assert "5 of 5 batch(es): 2 running, 1 failed, 1 promoted, 1 rejected" in shown.output


def test_status_and_days_narrow_the_list_and_json_says_the_same(
    project_dir: Path, cli: Callable[..., Any]
) -> None:
    _records(project_dir)

    running = cli("pipeline", "batches", "--status", "running", "--status", "failed")
    recent = cli("pipeline", "batches", "--days", "7", "--json")

    assert "3 of 5 batch(es): 2 running, 1 failed" in running.output
    assert "-promoted" not in running.output
    listed = json.loads(recent.output)
    assert [r["branch"].split("-")[-1] for r in listed] == ["alive", "dead"]  # changed this week
    assert [r["died"] for r in listed] == [False, True]


def test_a_record_whose_times_were_written_without_a_zone_is_read_as_utc(
    project_dir: Path, cli: Callable[..., Any]
) -> None:
    """A record edited by hand ("2026-12-06T10:00:00", no zone) was a TypeError traceback for
    --days and for the died check (a naive time compared with now); it is taken as UTC."""
    folder = project_dir / ".wms" / "store" / "batches"
    folder.mkdir(parents=True)
    naive = (NOW - timedelta(hours=20)).replace(tzinfo=None).isoformat(timespec="seconds")
    record = {"status": "running", "branch": "data/20261206-edited", "sha": "e" * 40, "attempts": 1}
    (folder / f"{'e' * 40}.json").write_text(json.dumps(record | {"started_at": naive, "updated_at": naive}))

    shown = cli("pipeline", "batches", "--days", "2")

    assert shown.exit_code == 0, shown.output
    [line] = [line for line in shown.output.splitlines() if "-edited" in line]
    assert "running (died)" in line  # started 20 h ago, longer than a run lasts
    assert cli("pipeline", "batches", "--days", "0").output.count("-edited") == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--status", "merged"), "unknown --status merged; use one of: running, failed, promoted"),
        ((), "no batch records in"),
    ],
)
def test_a_wrong_status_or_an_empty_store_is_one_line(
    project_dir: Path, cli: Callable[..., Any], args: tuple[str, ...], says: str
) -> None:
    shown = cli("pipeline", "batches", *args)

    assert says in shown.output and "Traceback" not in shown.output
    assert shown.exit_code == (2 if args else 0)
