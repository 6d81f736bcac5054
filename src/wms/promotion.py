"""The pipeline's last stages: promote (pointer files), publish (merge or pull request), reconcile, deploy.

Promotion is the merge. The promote stage writes the move into pointer files built on
main's current ones (`<run>/promotion/data/dataset.json`, `.../models/production_*`); no
alias moves there. Publish carries them to main: a merge at once with the local git host,
a pull request with auto-merge on GitHub, or, outside git, the working tree (which is main).
Reconcile then makes the registry follow main, and deploy serves what main names. A pull
request that never merges moves nothing.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from wms.config import Project
from wms.errors import UsageError
from wms.production import CURRENT_FILE, HISTORY_FILE, plan_move, reconcile
from wms.vcs.mainline import MainLine

if TYPE_CHECKING:
    from wms.data.store import DatasetStore
    from wms.gate import GateDecision
    from wms.registry import Registry
    from wms.runs import PipelineRun, StageRecord, TrainedRun

PROMOTION_DIR = "promotion"


def promoted_by(run_id: str) -> str:
    """Who a pipeline run's promotion names in the production ledger (the sweep looks for it on main)."""
    return f"wms pipeline run {run_id}"


def relative_to_project(project: Project, path: Path) -> Path:
    """A configured path inside the project, relative to its root (pointer files must be)."""
    try:
        return project.path(path).resolve().relative_to(project.root.resolve())
    except ValueError:
        raise UsageError(
            f"{path} is outside the project {project.root}; keep the pointer files inside it"
        ) from None


def promote(
    project: Project,
    registry: Registry,
    store: DatasetStore,
    run: PipelineRun,
    trained: TrainedRun,
    decision: GateDecision,
    dataset_version: str,
) -> str:
    """Write the promotion into `<run>/promotion/`, on top of main's pointer files; the stage outcome."""
    settings = project.settings
    out = run.run_dir / PROMOTION_DIR
    shutil.rmtree(out, ignore_errors=True)
    pointer_dir_rel = relative_to_project(project, settings.tracking.pointer_dir)
    pointer_dir = out / pointer_dir_rel
    pointer_dir.mkdir(parents=True)
    main = MainLine(project)
    for name in (CURRENT_FILE, HISTORY_FILE):  # the move is appended to main's ledger, not the branch's
        text = main.read_text(project.root / pointer_dir_rel / name)
        if text is not None:
            (pointer_dir / name).write_text(text)
    version = str(run.outputs["candidate_version"])
    move = plan_move(
        registry,
        pointer_dir,
        version,
        action="promote",
        reason=decision.reason,
        by=promoted_by(run.run_id),
        batch=(run.outputs.get("batch") or {}).get("sha"),
    )
    store.point(
        out / relative_to_project(project, settings.data.pointer), dataset_version, settings.store.url
    )
    dice = trained.test_metrics["dice"]
    baseline = decision.comparison("dice").baseline
    versus = (
        f"vs baseline {baseline:.4f} (version {move['from_version']})"
        if baseline is not None
        else f"(floor {settings.gate.floor:.2f})"
    )
    run.promoted = True
    run.outputs["model_version"] = version
    run.outputs["promotion_files"] = str(out)
    run.summary = f"promoted version {version}: test Dice {dice:.4f} {versus}"
    return f"version {version} goes to production when main takes it (built on main at {main.where})"


def publish(project: Project, run: PipelineRun, st: StageRecord) -> None:
    """Carry the promotion to main: merge at once (local), a pull request (github), or the working tree."""
    from wms.vcs.publish import NOT_ON_DATA_BRANCH, dataset_summary, publish_promotion

    if not run.promoted:
        st.status, st.outcome = "skipped", "not promoted: the data branch stays for review"
        return
    files = run.recorded_path("promotion_files") or run.run_dir / PROMOTION_DIR
    batch = run.outputs.get("batch") or {}
    report = run.recorded_path("gate_report")
    outcome = publish_promotion(
        project,
        branch=batch.get("branch"),
        sha=batch.get("sha"),
        files=files,
        gate_markdown=Path(report).read_text() if report else run.summary,
        dataset_summary=dataset_summary(dataclasses.replace(project, root=files)),
    )
    run.outputs["published"] = outcome.line
    if outcome.commit:  # its pull request's head: the batch's status is shown there too
        run.outputs["pointer_commit"] = outcome.commit
    if outcome.line == NOT_ON_DATA_BRANCH:
        run.outputs["on_main"] = run.outputs["merged"] = True
        st.status = "skipped"
        st.outcome = "no data branch: the pointer files are written to the working tree, which is main"
        return
    # on_main: this checkout is main with the promotion (a local merge), so reconcile can read it;
    # merged: main has the promotion now, also where GitHub merged it at once (the checkout is stale).
    run.outputs["on_main"] = project.settings.git.host == "local"
    run.outputs["merged"] = outcome.merged
    st.outcome = outcome.line


def reconcile_stage(project: Project, registry: Registry, run: PipelineRun, st: StageRecord) -> None:
    """Make the `production` alias follow main, when main has taken the promotion."""
    if not run.promoted:
        st.status, st.outcome = "skipped", "not promoted: production stays as main says"
        return
    if not run.outputs.get("on_main"):
        st.status = "skipped"
        st.outcome = (
            "production follows main: it moves "
            + (
                "now that main took the pull request"
                if run.outputs.get("merged")
                else "when the pull request merges"
            )
            + " (the release workflow runs `wms model reconcile` on main)"
        )
        return
    result = reconcile(registry, project.path(project.settings.tracking.pointer_dir))
    run.outputs["reconciled"] = result.wanted
    st.outcome = result.summary


def deploy(
    project: Project, registry: Registry, run: PipelineRun, st: StageRecord, notify: Callable[[str], None]
) -> None:
    """The model main now names, to the deploy target, checked before it takes traffic."""
    from wms.deploy import make_deployer

    if not run.promoted:
        st.status, st.outcome = "skipped", "not promoted: what serves now keeps serving"
        return
    if not run.outputs.get("reconciled"):
        st.status, st.outcome = "skipped", "production follows main: deployed when main takes the promotion"
        return
    if not project.settings.deploy.in_pipeline:
        st.status, st.outcome = "skipped", "deploy.in_pipeline is off (`wms deploy` or the workflow deploys)"
        return
    result = make_deployer(project, notify, registry).deploy(str(run.outputs["reconciled"]))
    run.outputs["deployed"] = result.url
    st.outcome = result.summary
