"""`wms model prune`: the model files of old candidates that never served, reclaimed (the
logic is wms.registry_prune's); a command of the `wms model` group."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer

from wms.cli._common import console, state
from wms.registry import MlflowRegistry


def prune(
    ctx: typer.Context,
    older_than: int | None = typer.Option(
        None,
        "--older-than",
        min=1,
        help="Only models trained more than this many days ago [default: tracking.prune_after_days].",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be deleted."),
    once_a_day: bool = typer.Option(
        False,
        "--once-a-day",
        help="Do nothing if a prune finished in the last 20 hours (the jobs on the GPU instance).",
    ),
) -> None:
    """Delete the model files of candidates that never served, keeping their runs' record.

    For each training run older than --older-than days (tracking.prune_after_days; 0 there:
    nothing is pruned) whose model never held `production` or `previous` (by the aliases and by
    models/production_current.json and production_history.jsonl, here and on main) and did not
    pass the gate, its registered versions and its `model/` files are deleted; the run keeps
    its params, metrics, tags, gate report and plots. First, a run still marked RUNNING that
    logged nothing for compute.max_hold_hours and one lease (its process was killed) is marked
    KILLED, with the reason in its tag `wms.marked_killed`.
    """
    from wms.cli.compute import job_lease
    from wms.registry_prune import ever_in_production, prune_runs, pruned_recently, record_prune, summary
    from wms.registry_stale import end_stale_runs, stale_lines
    from wms.report import write_step_summary

    project = state(ctx).project()
    registry, now = MlflowRegistry(project), datetime.now(UTC)
    idle = project.settings.compute.longest_run
    ended = stale_lines(end_stale_runs(registry, idle, "`wms model prune`", dry_run), idle, dry_run)
    for line in ended:
        console.print(line, highlight=False, soft_wrap=True)
    killed = "".join(f"- {line}\n" for line in ended)
    days = older_than or project.settings.tracking.prune_after_days
    if not days:
        off = "tracking.prune_after_days is 0: nothing pruned (set it, or pass --older-than DAYS)"
        _say_pruned(off, killed)
        return
    recently = pruned_recently(registry, now) if once_a_day and not dry_run else None
    if recently:
        _say_pruned(recently, killed)
        return
    before = now - timedelta(days=days)
    with job_lease(project):  # single: the run's lease on the instance, after the pipeline's
        keep = ever_in_production(project)
        done = prune_runs(registry, keep, before, dry_run=dry_run)
        if not dry_run:
            record_prune(registry, now)
    lines = summary(done, keep, before, dry_run)
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    listed = "".join(f"- {line}\n" for line in lines[:-1][:50]) + ("- …\n" if len(lines) > 51 else "")
    write_step_summary(f"### Model files pruned\n\n{lines[-1]}\n\n{listed}{killed}")


def _say_pruned(line: str, killed: str) -> None:
    from wms.report import write_step_summary

    console.print(line, highlight=False, soft_wrap=True)
    write_step_summary(f"### Model files pruned\n\n{line}\n\n{killed}")
