"""The training-data pipeline: merge → validate → start compute → train → gate → stop compute →
promote → publish → reconcile → deploy.

    wms pipeline run --new-data data/incoming
    wms pipeline run -d DIR --branch data/20260101-120000 --sha SHA   # CI: main's code, the branch's data
    wms pipeline resume RUN_ID        # after a failure: continue from the first unfinished stage

Each stage is recorded in `.wms/runs/<run-id>/run.json` with its status, timing and
outcome, together with what later stages need (dataset version, MLflow run, gate decision),
so `resume` never redoes finished work. Compute is released on every path out: the
stop_compute stage runs in `finally`, SIGINT/SIGTERM become an exception so that `finally`
runs, a safety net stops it again if that stage failed, and the compute lease (renewed while
the run lives) lets `wms compute reap` stop it if this process dies outright. With
`compute.train_on = "here"` the run already runs on the instance (the workflows' self-hosted
runner): start_compute only takes this run's lease, renewed while it lives, and stop_compute
drops it and leaves the instance running for the workflow's stop job. One pipeline
at a time per dataset store: the run holds a lease lock on the store, and a run of a data
branch records the batch's outcome in the store (`wms.batches`) so none is lost. The base
dataset is main's latest promoted version, read at run time. Nothing moves unless the gate
says the candidate is better, and then only through main (`wms.promotion`).

`WMS_FAULT_STAGE=<stage>` (read by the CLI) makes that stage raise, to test all of this;
`WMS_FAULT_STAGE=<stage>:SIGTERM` sends the process a signal there instead. How a run is held
(the lock, signals, heartbeat, stage records, faults) is `wms.stage_runner`; this module is the stages.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from wms import promotion
from wms.batches import BatchLedger, detect_batch
from wms.compute import DEFAULT_HOLDER, Compute, Notify, make_compute, quiet
from wms.compute.hold import ComputeHold
from wms.config import Project
from wms.data.merge import (
    batch_files,
    check_test_split,
    corrections,
    merge_into,
    prepare_incoming,
    restore,
    validate_merged,
)
from wms.data.pointer import pointed_version
from wms.data.store import open_store
from wms.errors import UsageError
from wms.gate import GateDecision
from wms.gating import gate_candidate, left_out, production_per_main
from wms.registry import Registry
from wms.runs import (
    STAGES,
    InjectedFault,
    PipelineRun,
    StageRecord,
    TrainedRun,
    load_decision,
    load_trained,
    parse_fault,
    resume_plan,
    save_trained,
)
from wms.stage_runner import PipelineReporter, StageRunner
from wms.train.cache import forget_erased
from wms.train.run import train_and_log
from wms.vcs import runner_probe_for
from wms.vcs.mainline import MainLine

__all__ = ["STAGES", "InjectedFault", "Pipeline", "PipelineReporter", "PipelineRun", "StageRecord"]


class Pipeline(StageRunner):
    """Runs the stages in order for one batch of new data, or resumes a failed run."""

    def __init__(
        self,
        project: Project,
        registry: Registry,
        reporter: PipelineReporter,
        compute: Compute | None = None,
        notify: Notify = quiet,
        fault: str | None = None,
        holder: str = DEFAULT_HOLDER,
        remote_training: bool | None = None,
    ) -> None:
        """`remote_training` (default: compute.backend = "ec2" with train_on = "instance") trains
        on the instance over SSH; tests of the compute lifecycle turn it off to train here."""
        self.project = project
        self.registry = registry
        self.reporter = reporter
        self.notify = notify
        self.fault = parse_fault(fault)
        self.compute = compute or make_compute(
            project.settings.compute,
            runner_probe=lambda: runner_probe_for(project),
            notify=notify,
            holder=holder,
        )
        cfg = project.settings.compute
        self.remote_training = cfg.trains_remotely if remote_training is None else remote_training
        self.store = open_store(project)
        self.batches = BatchLedger(self.store.fs, self.store.root)
        self.work_dir = project.state_dir / "work" / "dataset"
        self.hold = ComputeHold(
            self.compute, cfg, notify, after_start=lambda: self._maybe_fault("start_compute")
        )
        self.last_run: PipelineRun | None = None  # the record, also when run/resume raised
        self.lock_lost = False  # set by the heartbeat: another writer took the store's lock

    # -- run and resume ------------------------------------------------------------------------
    def run(
        self, new_data: Path, branch: str | None = None, sha: str | None = None, skip_finished: bool = False
    ) -> PipelineRun:
        """Take `new_data` through every stage; raises WmsError when a stage cannot go on.

        `branch`/`sha` name the data branch commit the batch came from (default: the checked-out
        data branch, if any); its outcome is recorded for `wms pipeline sweep`. With
        `skip_finished`, a batch another run finished meanwhile is not run again.
        """
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        run_id = f"{stamp}-{uuid.uuid4().hex[:6]}"
        run = PipelineRun(run_id, str(new_data), self.project.runs_dir / run_id)
        batch = detect_batch(self.project, branch, sha)
        if batch:
            run.outputs["batch"] = batch
        return self._execute(run, set(), skip_finished)

    def resume(self, run_id: str) -> PipelineRun:
        """Continue a failed or interrupted run from its first unfinished stage."""
        run_dir = self.project.runs_dir / run_id
        if not (run_dir / "run.json").is_file():
            raise UsageError(f"no pipeline run {run_id!r} in {self.project.runs_dir}; list them there")
        run = PipelineRun.load(run_dir)
        start, keep = resume_plan(run)
        for name in STAGES:
            if name not in keep:
                run.stages[name] = StageRecord(name)
        run.status, run.failed_stage, run.finished_at, run.summary = "running", None, None, ""
        self.notify(f"resuming run {run_id} from {start}")
        return self._execute(run, keep, resumed=True)

    # -- the stages ---------------------------------------------------------------------------
    def _stages(self, run: PipelineRun, keep: set[str]) -> None:
        if "merge" in keep:
            version = run.outputs["dataset_version"]
        else:
            merged = self._merge_and_validate(run, Path(run.new_data))
            if merged is None:
                return
            version = merged

        if {"train", "gate"} <= keep:
            trained, decision = load_trained(run.run_dir), load_decision(run.outputs)
        else:
            dataset = restore(self.store, version, self.work_dir) if "merge" in keep else self.work_dir
            try:
                with self.stage(run, "start_compute", fault_at_entry=False) as st:
                    production_per_main(self.project, self.registry)  # else the gate refuses, after training
                    st.outcome = self.hold.take(run)
                if "train" in keep:
                    trained = load_trained(run.run_dir)
                else:
                    with self.stage(run, "train") as st:
                        trained = self._train(run, dataset, version, st)
                with self.stage(run, "gate") as st:
                    decision = gate_candidate(self.project, self.registry, run, dataset, trained)
                    st.outcome = ("pass: " if decision.promote else "fail: ") + decision.reason
            finally:
                with self.stage(run, "stop_compute") as st:
                    st.outcome = self.hold.give_back(run)

        if "promote" not in keep:
            with self.stage(run, "promote") as st:
                if decision.promote:
                    st.outcome = promotion.promote(
                        self.project, self.registry, self.store, run, trained, decision, version
                    )
                else:
                    st.status = "skipped"
                    st.outcome = "nothing moved: production and data/dataset.json stay as main has them"
        if not run.summary:
            run.summary = self._restored_summary(run, decision)
        if run.outputs.get("corrected"):
            run.summary += "; " + corrections(run.outputs["corrected"])
        if "publish" not in keep:
            with self.stage(run, "publish") as st:
                promotion.publish(self.project, run, st)
        if "reconcile" not in keep:
            with self.stage(run, "reconcile") as st:
                promotion.reconcile_stage(self.project, self.registry, run, st)
        with self.stage(run, "deploy") as st:
            promotion.deploy(self.project, self.registry, run, st, self.notify)

    def _merge_and_validate(self, run: PipelineRun, new_data: Path) -> str | None:
        """The merged version, stored once valid; None when the batch holds nothing new."""
        settings = self.project.settings
        main = MainLine(self.project)
        where = f"{settings.data.pointer} on main ({main.where})"
        base = pointed_version(main.dataset_pointer(), where, self.store, settings.store.url)
        run.outputs["base_version"] = base
        run.outputs["base_from"] = main.where
        batch = run.outputs.get("batch")
        cut = main.dataset_version_at_fork(batch["sha"]) if batch else None
        restore = main.restore_requests(batch["sha"]) if batch else frozenset()
        with self.stage(run, "merge") as st:
            if settings.data.auto_prepare:
                new_data = prepare_incoming(new_data, run.run_dir / "prepared", settings.data.size)
            # Conflicts stop here, writing nothing; orphans and non-images go on to validation's report.
            plan = self.store.plan(
                new_data, base, for_validation=True, correct=True, cut=cut, restore=restore
            )
            dataset = merge_into(self.store, self.work_dir, base, plan)
            back = f" ({len(plan.restored)} put back to an earlier mask)" if plan.restored else ""
            fixed = f"{len(plan.corrected)} mask(s) corrected{back}, " if plan.corrected else ""
            st.outcome = (
                f"{len(plan.added)} new, {fixed}{len(plan.unchanged)} already present → "
                f"version {plan.version or 'none'} ({len(plan.pairs)} pairs, base {base or 'none'})"
            )
            run.outputs["dataset_version"] = plan.version
            run.outputs["new_pairs"] = len(plan.added)
            run.outputs["corrected"] = plan.corrected
            run.outputs["work_dir"] = str(dataset)
        if not plan.added and not plan.corrected and not plan.orphans:
            run.summary = f"not promoted: no new pairs in {new_data} (version {base} already holds them)"
            return None
        with self.stage(run, "validate") as st:
            st.outcome = validate_merged(dataset, settings.data.size, run.run_dir, batch_files(plan), base)
            check_test_split(plan, settings.data.test_fraction, settings.gate.min_images)
            version = self.store.ingest(dataset, base, correct=True, restore=restore).version
            run.outputs["dataset_version"] = version
        return version

    def _train(self, run: PipelineRun, dataset: Path, version: str, st: StageRecord) -> TrainedRun:
        if self.remote_training:
            from wms.remote.entry import train_remotely

            trained = train_remotely(
                self.project, run, dataset, version, self.reporter.train_reporter(), self.notify, self.compute
            )
            where = f" on {run.outputs['remote_job']['host']}"
        else:
            cache = self.project.path(self.project.settings.train.cache_dir)
            if cleared := forget_erased(cache, self.store.erased_blobs()):
                self.notify(f"training cache {cache}: {cleared} array(s) deleted, for photos erased since")
            trained = train_and_log(
                self.project, dataset, self.registry, version, self.reporter.train_reporter()
            )
            save_trained(run.run_dir, trained)  # so a resumed run does not train again
            where = ""
        if trained.best_epoch is not None:
            where += f" (best epoch {trained.best_epoch})"
        st.outcome = (
            f"run {trained.run_id[:8]}: test Dice {trained.test_metrics['dice']:.4f}, "
            f"IoU {trained.test_metrics['iou']:.4f}{where}"
        )
        run.outputs["mlflow_run_id"] = trained.run_id
        return trained

    def _restored_summary(self, run: PipelineRun, decision: GateDecision) -> str:
        if run.promoted:
            return f"promoted version {run.outputs.get('model_version', '?')}: {decision.reason}"
        return f"not promoted: {decision.reason}; {left_out(self.project, run)}"
