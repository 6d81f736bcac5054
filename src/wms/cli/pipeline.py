"""`wms pipeline`: run the whole training-data pipeline on a batch of new pairs, or resume one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markdown import Markdown

from wms.cli._common import (
    TrainProgress,
    WmsGroup,
    console,
    dataset_folder,
    on_interrupt,
    print_error,
    print_interrupted,
    state,
    styled,
)
from wms.config import Project
from wms.errors import RegistryError, UsageError, WmsError
from wms.words import first_few

if TYPE_CHECKING:
    from wms.batches import BatchLedger
    from wms.pipeline import PipelineRun, StageRecord
    from wms.registry import MlflowRegistry
    from wms.sweep import Pending

app = typer.Typer(
    cls=WmsGroup,
    no_args_is_help=True,
    help=(
        "merge → validate → start compute → train → gate → stop compute → promote → publish → deploy. "
        "Compute is stopped on every way out; a failed run continues with `wms pipeline resume`."
    ),
)

MARKS = {"ok": styled("✔", "green"), "failed": styled("✖", "red"), "skipped": styled("-", "dim")}


class StagePrinter:
    """Prints each stage when it ends."""

    def __init__(self) -> None:
        self._training: TrainProgress | None = None

    def stage_started(self, stage: StageRecord) -> None:
        console.print(styled(f"▶ {stage.name}", "bold"))

    def stage_done(self, stage: StageRecord) -> None:
        if self._training is not None:  # a bar cut short (Ctrl-C mid-epoch) gives the cursor back
            self._training.close()
            self._training = None
        detail = stage.error if stage.status == "failed" else stage.outcome
        console.print(
            MARKS.get(stage.status, "?"),
            f"{stage.name:<13} {stage.seconds:6.1f} s  {detail}",
            highlight=False,
            soft_wrap=True,
        )

    def train_reporter(self) -> TrainProgress:
        self._training = TrainProgress()
        return self._training


def run_pipeline(
    project: Project,
    new_data: Path | None = None,
    resume: str | None = None,
    branch: str | None = None,
    sha: str | None = None,
    skip_finished: bool = False,
    keep_going: bool = False,
) -> PipelineRun:
    """Run (or resume) the pipeline with stage printing; shared by `wms pipeline` and `wms demo`.

    A run that fails prints its error and exits; with `keep_going` (the sweeper, which has more
    batches to run) the error is raised again once printed, and only an interruption exits.
    On the instance (compute.train_on = "here"), this job keeps the lease its workflow run's
    start job took at one compute.lease_minutes while it lives (wms.compute.hold.keep_job_lease).
    """
    from wms.cli.compute import job_lease

    with job_lease(project):
        return _run_pipeline(project, new_data, resume, branch, sha, skip_finished, keep_going)


def _run_pipeline(
    project: Project,
    new_data: Path | None,
    resume: str | None,
    branch: str | None,
    sha: str | None,
    skip_finished: bool,
    keep_going: bool,
) -> PipelineRun:
    # Imported here so `wms --help` and the data commands start without loading torch.
    from wms.cli.compute import default_holder, note
    from wms.guards import Interrupted
    from wms.pipeline import Pipeline
    from wms.registry import MlflowRegistry
    from wms.vcs.commit_status import batch_statuses

    # Tests inject faults this way; the value is read here, at the entry point, like the settings.
    fault = os.environ.get("WMS_FAULT_STAGE")
    statuses = batch_statuses(project, os.environ, note) if sha else None  # the batch's commit on GitHub
    registry = MlflowRegistry(project)
    pipeline = Pipeline(
        project,
        registry,
        StagePrinter(),
        notify=note,
        fault=fault,
        holder=f"{default_holder()}-pipeline",
    )
    end_stale_training_runs(registry, project)
    if statuses and sha:
        statuses.show(sha, {"status": "running"})
    try:
        if resume:
            result = pipeline.resume(resume)
        else:
            result = pipeline.run(new_data or Path(), branch=branch, sha=sha, skip_finished=skip_finished)
    except (Interrupted, KeyboardInterrupt) as exc:
        signame = exc.signame if isinstance(exc, Interrupted) else "SIGINT"
        interrupted = pipeline.last_run
        if interrupted is None:  # still waiting for the store's lock: no stage had begun
            left = "stopped while waiting for the dataset store's lock, before any stage ran; run it again"
        else:
            left = (
                f"run {interrupted.run_id} stopped and compute was released; "
                f"continue with `wms pipeline resume {interrupted.run_id}`"
            )
        print_interrupted(signame, left)
        raise typer.Exit(Interrupted.exit_code) from None
    except WmsError as exc:
        failed = pipeline.last_run
        if failed is None or not failed.next_step:
            raise
        print_error(f"{exc}; {failed.next_step}")
        if keep_going:
            raise
        raise typer.Exit(exc.exit_code) from None
    finally:
        if pipeline.last_run is not None and pipeline.last_run.run_dir.exists():
            report_to_github(pipeline.last_run)
        if statuses and sha:
            pointer = (pipeline.last_run.outputs if pipeline.last_run else {}).get("pointer_commit")
            statuses.show_outcome(pipeline.batches, sha, also=str(pointer or ""))
    if report := result.recorded_path("gate_report"):
        console.print(Markdown(report.read_text()))
        console.print(styled(f"gate report: {report.parent}", "dim"), highlight=False, soft_wrap=True)
    colour = "green" if result.promoted else "yellow"
    console.print(styled(result.summary, f"bold {colour}"), highlight=False, soft_wrap=True)
    usage = result.outputs.get("compute")
    if usage and usage.get("backend"):
        cost = (
            f", ${usage['cost_usd']:.4f} at ${usage['hourly_price_usd']}/h" if usage.get("cost_usd") else ""
        )
        where = f" {usage['instance_id']}" if usage.get("instance_id") else ""
        console.print(
            f"compute: {usage['backend']}{where} held {usage['instance_seconds']:.0f} s{cost}",
            highlight=False,
        )
    record = result.run_dir / "run.json"
    console.print(styled(f"run record: {record}", "dim"), highlight=False, soft_wrap=True)
    return result


def end_stale_training_runs(registry: MlflowRegistry, project: Project) -> None:
    """Mark KILLED the training runs left RUNNING by a process that died (a cancelled job, an
    instance stopped under it): in `single` MLflow is up only while a pipeline runs."""
    from wms.cli.compute import note
    from wms.registry_stale import end_stale_runs, stale_lines

    idle = project.settings.compute.longest_run
    try:
        ended = end_stale_runs(registry, idle, "`wms pipeline`")
    except RegistryError as exc:  # this run's own calls say so, if MLflow is out of reach
        note(f"could not look for training runs left running: {exc}")
        return
    for line in stale_lines(ended, idle, dry_run=False):
        note(line)


def report_to_github(run: PipelineRun) -> None:
    """Run id, outcome and compute cost as step outputs, and the stage table on the Summary page."""
    from wms.report import write_github_output, write_step_summary

    usage = run.outputs.get("compute", {})
    write_github_output(
        {
            "run_id": run.run_id,
            "status": run.status,
            "failed_stage": run.failed_stage or "",
            "promoted": str(run.promoted).lower(),
            # main has the promotion at the end of the run (merged, not a pull request left open):
            # only then may the workflow deploy right away.
            "on_main": str(bool(run.promoted and run.outputs.get("merged"))).lower(),
            "dataset_version": str(run.outputs.get("dataset_version") or ""),
            "model_version": str(run.outputs.get("model_version") or ""),
            "summary": run.summary,
            "instance_seconds": str(usage.get("instance_seconds", 0)),
            "cost_usd": str(usage.get("cost_usd") or 0),
        }
    )
    rows = ["| stage | status | seconds | outcome |", "|---|---|---|---|"]
    for stage in run.stages.values():
        detail = (stage.error if stage.status == "failed" else stage.outcome) or ""
        rows.append(f"| {stage.name} | {stage.status} | {stage.seconds:.1f} | {detail.replace('|', '/')} |")
    cost = f"compute held {usage.get('instance_seconds', 0):.0f} s" + (
        f", ${usage['cost_usd']:.4f}" if usage.get("cost_usd") else ""
    )
    gate = run.recorded_path("gate_report")
    gate_md = ["", "#### Quality gate", "", gate.read_text()] if gate and gate.exists() else []
    # The report names the files to fix; on a runner its path in the error line reaches nobody.
    checked = run.run_dir / "validation.md"
    rejected = run.stages["validate"].status == "failed" and checked.exists()
    validation_md = ["", "#### Validation", "", checked.read_text()] if rejected else []
    write_step_summary(
        "\n".join(
            [f"### pipeline run {run.run_id}", "", run.summary, "", *rows, "", cost, *validation_md, *gate_md]
        )
    )


@app.command()
def run(
    ctx: typer.Context,
    new_data: Path | None = typer.Option(
        None, "--new-data", "-d", help="Folder with images/ and masks/ of new pairs (default: data.incoming)."
    ),
    branch: str | None = typer.Option(
        None, "--branch", help="The data branch the pairs came from (default: the checked-out data branch)."
    ),
    sha: str | None = typer.Option(None, "--sha", help="The branch's commit the pairs were taken from."),
) -> None:
    """Merge new pairs, validate, train, gate against production and promote only a better model.

    The base dataset is main's latest promoted version. A promotion reaches main by merging
    the data branch (git.host = local) or by its pull request (github); the `production`
    alias follows main. In CI the checkout holds main's code and --branch/--sha name the data
    branch whose pairs (`wms vcs take-incoming`) are in --new-data; the outcome of every
    batch is recorded in the store, so `wms pipeline sweep` can catch up any that is left; a
    batch named with --branch whose record is already finished is not run again. On GitHub
    (git.host = github, GITHUB_TOKEN set) the --sha commit gets the status "WMS training":
    pending, then the outcome.
    """
    from wms.batches import check_sha

    if new_data is not None:
        dataset_folder(new_data, "--new-data")  # before a run is recorded that resume could not mend
    project = state(ctx).project()
    if sha is not None:
        check_sha(sha)
    if sha is not None and branch is None:
        raise UsageError("--sha names a commit of a data branch: give the branch too (--branch data/...)")
    # A queued or re-run CI job may come after the sweeper finished the same commit: not again.
    incoming = new_data or project.path(project.settings.data.incoming)
    run_pipeline(project, incoming, branch=branch, sha=sha, skip_finished=branch is not None)


@app.command()
def sweep(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list the batches that would run."),
) -> None:
    """Run every data branch whose batch has no finished run (cancelled, lost, never started).

    Lists the data branches on git.remote and here, skips every head whose record in the
    dataset store is finished (promoted, published, not promoted, rejected, no new data),
    and runs the rest one after another, each with the pairs of its own commit. A head that
    is the pipeline's pointer commit counts as the batch commit under it: left alone once
    published, run again when its pull request failed after the push. A head that changes
    more than data/incoming/ is recorded rejected (also by --dry-run) and never run; so is a
    batch never run whose commit GitHub says Data push's validation rejected. A batch that
    fails does not stop the sweep (the sweep exits 1 after the last one); a batch that 3 runs
    did not finish (failed, or died) is reported, not retried, and recorded failed once its
    last run started longer ago than a run lasts (compute.max_hold_hours and one lease). A data branch whose
    batch is recorded promoted (main has it) is deleted, here and on git.remote; so is one
    recorded published whose promotion main's production ledger now holds (its pull request
    merged), and its record becomes promoted. A batch recorded published whose pull request
    was closed without merging (git.host = github) is recorded closed, and its branch is kept
    and listed, with what to do, among the batches left to a person; so is one whose pull
    request is open but cannot merge (another promotion reached main first), or that GitHub
    holds for over an hour (a failed required check, a missing review). A batch recorded
    published whose branch is gone (deleted by hand) is settled from its branch's pull request:
    merged, it is recorded promoted; closed, closed; one GitHub knows nothing of stays published.
    Pairs pushed onto a published batch's branch, over its pointer commit, are recorded rejected
    (push them from main); the published batch under them is settled and listed as above.
    Training over SSH (compute.train_on = "instance", the split layout), the sweep leases the GPU
    instance for all its batches (holder `<holder>-sweep`): the first batch that trains starts it,
    the next ones find it running, and it is stopped once, after the last, on every way out.
    """
    from wms.batches import MAX_ATTEMPTS, BatchLedger
    from wms.cli.compute import default_holder, note, open_compute
    from wms.compute.hold import hold_across_batches
    from wms.data.store import open_store
    from wms.guards import signals_raise
    from wms.sweep import delete_branches, pending
    from wms.vcs import make_git_host
    from wms.vcs.commit_status import batch_statuses

    project = state(ctx).project()
    store = open_store(project)
    from wms.report import write_github_output, write_step_summary

    notes: list[str] = []
    merged: list[str] = []
    # A refused branch, a settled pull request: said on the batch's commit too (a run says its own)
    statuses = batch_statuses(project, os.environ, note)
    ledger = BatchLedger(store.fs, store.root, on_write=statuses.show_record if statuses else None)
    todo = pending(project, ledger, notes, merged, git_host=lambda: make_git_host(project))
    write_github_output({"pending": str(len(todo))})  # the sweeper workflow starts compute only for work
    if merged:  # main has their batches: nothing reads these branches any more
        problems = [] if dry_run else delete_branches(project, merged)
        shown = first_few(merged, 10)
        verb = "would delete" if dry_run else f"deleted {len(merged) - len(problems)} of"
        console.print(f"{verb} the data branches merged into main: {shown}", highlight=False)
        notes += problems
    for line in notes:
        console.print(styled(line, "yellow"), highlight=False, soft_wrap=True)
    if notes:  # on the workflow run's page: a green sweep may still leave batches to a person
        write_step_summary(
            "\n".join(["### Data branches the sweep leaves to a person", ""] + [f"- {n}" for n in notes])
        )
    if not todo:
        console.print("every data branch has a finished run; nothing to do")
        return
    for item in todo:
        console.print(f"{'would run' if dry_run else 'running'} {item.branch} ({item.sha[:8]}): {item.why}")
    if dry_run:
        return
    # split: one start of the GPU instance for all the batches, one stop after the last (each
    # batch's own stop leaves it to this lease, its pipeline's holder being another)
    cfg, sweep_holder = project.settings.compute, f"{default_holder()}-sweep"
    outcomes: list[str] = []
    on_interrupt(ctx, "the sweep stopped; a later sweep runs the batches it left")
    with signals_raise(), hold_across_batches(open_compute(project, sweep_holder), cfg, note):
        failed = _run_batches(project, ledger, todo, outcomes)
    console.print("\n".join(["sweep:", *outcomes]), highlight=False, soft_wrap=True)
    if failed:
        print_error(
            f"{failed} of {len(todo)} batch(es) failed (above); a later sweep runs each again, "
            f"{MAX_ATTEMPTS} attempts in all"
        )
        raise typer.Exit(1)


def _run_batches(project: Project, ledger: BatchLedger, todo: list[Pending], outcomes: list[str]) -> int:
    """Run each batch of `todo` in turn, its outcome added to `outcomes`; the number that failed."""
    from wms.errors import WmsError
    from wms.vcs.guard import BranchRefused, take_incoming

    failed = 0
    for item in todo:
        incoming = project.state_dir / "incoming" / item.sha[:12]
        shutil.rmtree(incoming, ignore_errors=True)  # a retry takes the pairs afresh
        try:
            take_incoming(project, item.sha, incoming)
            done = run_pipeline(
                project, incoming, branch=item.branch, sha=item.sha, skip_finished=True, keep_going=True
            )
            outcomes.append(f"{item.branch}: {done.summary}")
        except BranchRefused as exc:  # past pending()'s guard: a file name that would land outside --out
            ledger.refuse(item.branch, item.sha, str(exc))
            outcomes.append(f"{item.branch}: rejected ({exc})")
        except WmsError as exc:  # one batch's failure is not the next one's; a cancelled sweep stops
            rejected = (ledger.get(item.sha) or {}).get("status") == "rejected"  # the batch's own fault
            failed += not rejected
            outcomes.append(f"{item.branch}: {'rejected' if rejected else 'failed'} ({exc})")
    return failed


@app.command()
def resume(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="The run to continue: a folder name in .wms/runs/."),
) -> None:
    """Continue a failed or interrupted run from its first unfinished stage.

    Finished stages are not done again: the merged dataset version, the trained model (in
    MLflow) and the gate decision are read from the run record. A run of a data branch whose
    batch another run has finished or taken on since is refused.
    """
    run_pipeline(state(ctx).project(), resume=run_id)
