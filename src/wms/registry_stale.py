"""Training runs whose process died: marked KILLED in MLflow, with the reason, instead of RUNNING for good.

A run ends FINISHED or FAILED from its own process (wms.registry's `start_run`). A process that
is killed outright (SIGKILL, a cancelled or timed-out job whose runner went with it, the GPU
instance stopped or reclaimed under its job) ends nothing, and MLflow shows the run as running
for ever; `wms model prune` leaves such runs alone. A live run logs its metrics every epoch, and
no training holds the GPU instance longer than compute.max_hold_hours (the reaper stops it one
compute.lease_minutes later), so a RUNNING run that logged nothing for that long is dead.
`end_stale_runs` marks each KILLED, its end time that of its last sign of life, with a tag
(`wms.marked_killed`) saying why. A run continued later (a job resumed from its checkpoint)
is RUNNING again, with the tag dropped and `wms.continued_at` as its sign of life; one whose
process was only silent (a laptop asleep) and ends it itself drops the tag as it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from wms.registry import MlflowRegistry
from wms.registry_api import CONTINUED_TAG, KILLED_TAG
from wms.times import parse_time


@dataclass(frozen=True)
class StaleRun:
    """A RUNNING run that logged nothing for longer than a live one can."""

    run_id: str
    name: str
    started_at: datetime
    last_seen: datetime


def end_stale_runs(
    registry: MlflowRegistry, idle: timedelta, by: str, dry_run: bool = False, now: datetime | None = None
) -> list[StaleRun]:
    """Mark KILLED every RUNNING run of the experiment that logged nothing for longer than `idle`
    (`by` names the command, for the tag); returns them, oldest first. With `dry_run`, only returns them."""
    now = now or datetime.now(UTC)
    cutoff = now - idle
    stale = []
    for run in _running(registry):
        started = _time(run.info.start_time)
        if started > cutoff:
            continue
        last = max([started, *_continued(run), *_metric_times(registry, run)])
        if last > cutoff:
            continue
        stale.append(StaleRun(run.info.run_id, run.info.run_name or "", started, last))
        if dry_run:
            continue
        hours = idle.total_seconds() / 3600
        note = (
            f"{now.isoformat(timespec='seconds')}: marked KILLED by {by}: nothing logged since "
            f"{last.isoformat(timespec='seconds')}, over {hours:g} h (compute.max_hold_hours and one "
            "compute.lease_minutes), so the process training it is gone (killed, its job cancelled or "
            "timed out, or its instance stopped)"
        )
        registry.mlflow.set_tag(run.info.run_id, KILLED_TAG, note)
        registry.mlflow.end_run(run.info.run_id, "KILLED", int(last.timestamp() * 1000))
    return sorted(stale, key=lambda s: s.started_at)


def stale_lines(stale: list[StaleRun], idle: timedelta, dry_run: bool) -> list[str]:
    """A line per run marked KILLED (or, in a dry run, to be)."""
    verb = "would mark" if dry_run else "marked"
    hours = idle.total_seconds() / 3600
    return [
        f"run {s.run_id[:8]} ({s.name or 'unnamed'}, started {s.started_at:%Y-%m-%d %H:%M}): {verb} KILLED, "
        f"nothing logged since {s.last_seen:%Y-%m-%d %H:%M} UTC (over {hours:g} h: its process is gone)"
        for s in stale
    ]


def _running(registry: MlflowRegistry) -> list[Any]:
    """The RUNNING runs of the experiment and of the ones it was renamed from (the project moved)."""
    name = registry.project.settings.tracking.experiment
    experiments = registry.mlflow.experiments()
    ids = [e.experiment_id for e in experiments if e.name == name or e.name.startswith(f"{name} (id ")]
    return list(registry.mlflow.runs(ids, "attributes.status = 'RUNNING'")) if ids else []


def _time(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, UTC)


def _continued(run: Any) -> list[datetime]:
    when = parse_time(run.data.tags.get(CONTINUED_TAG))
    return [when] if when is not None else []


def _metric_times(registry: MlflowRegistry, run: Any) -> list[datetime]:
    """When each metric of the run was last logged (each epoch logs its metrics)."""
    times = []
    for key in run.data.metrics:
        times += [_time(m.timestamp) for m in registry.mlflow.metric_history(run.info.run_id, key)]
    return times
