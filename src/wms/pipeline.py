"""The training-data pipeline: merge → validate → start compute → train → gate → stop compute →
promote → publish → deploy.

    wms pipeline run --new-data data/incoming
    wms pipeline resume RUN_ID        # after a failure: continue from the first unfinished stage

Each stage is recorded in `.wms/runs/<run-id>/run.json` with its status, timing and
outcome, together with what later stages need (dataset version, MLflow run, gate decision),
so `resume` never redoes finished work. Compute is released on every path out: the
stop_compute stage runs in `finally`, SIGINT/SIGTERM become an exception so that `finally`
runs, a safety net stops it again if that stage failed, and the compute lease (renewed while
the run lives) lets `wms compute reap` stop it if this process dies outright. One pipeline
at a time per dataset store: the run holds a lease lock on the store. Nothing moves (no alias,
no pointer file) unless the gate says the candidate is better.

`WMS_FAULT_STAGE=<stage>` (read by the CLI) makes that stage raise, to test all of this;
`WMS_FAULT_STAGE=<stage>:SIGTERM` sends the process a signal there instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from wms.compute import Compute, Notify, cost_usd, make_compute, quiet
from wms.config import Project
from wms.data.lease import LeaseHeld, default_owner, lease, renew
from wms.data.pointer import read_pointer
from wms.data.prepare import prepare_dataset
from wms.data.store import IngestPlan, open_store
from wms.data.validate import validate_dataset
from wms.errors import BackendError, DataError, GateError, UsageError, WmsError
from wms.gate import REPORT_MD, GateDecision, decide, write_report
from wms.guards import Heartbeat, Interrupted, signals_raise
from wms.parity import check_onnx_parity
from wms.registry import Registry, move_production
from wms.runs import (
    STAGES,
    InjectedFault,
    PipelineRun,
    StageRecord,
    load_decision,
    load_trained,
    now_iso,
    parse_fault,
    resume_plan,
    save_trained,
)
from wms.scores import ImageScore, evaluate_onnx
from wms.train.loop import TrainReporter
from wms.train.run import TrainedRun, split_pairs, train_and_log
from wms.train.spec import ONNX_FILE
from wms.vcs import runner_probe_for

LOCK_FILE = "pipeline.lock.json"

__all__ = ["STAGES", "InjectedFault", "Pipeline", "PipelineReporter", "PipelineRun", "StageRecord"]


class PipelineReporter(Protocol):
    """Shows the run to a person; the CLI prints each stage as it ends."""

    def stage_started(self, stage: StageRecord) -> None: ...
    def stage_done(self, stage: StageRecord) -> None: ...
    def train_reporter(self) -> TrainReporter | None: ...


class Pipeline:
    """Runs the stages in order for one batch of new data, or resumes a failed run."""

    def __init__(
        self,
        project: Project,
        registry: Registry,
        reporter: PipelineReporter,
        compute: Compute | None = None,
        notify: Notify = quiet,
        fault: str | None = None,
    ) -> None:
        self.project = project
        self.registry = registry
        self.reporter = reporter
        self.notify = notify
        self.fault = parse_fault(fault)
        self.compute = compute or make_compute(
            project.settings.compute, runner_probe=runner_probe_for(project), notify=notify
        )
        self.store = open_store(project)
        self.work_dir = project.state_dir / "work" / "dataset"
        self._held_since: float | None = None  # monotonic time compute was asked to start
        self.last_run: PipelineRun | None = None  # the record, also when run/resume raised

    # -- the runner ---------------------------------------------------------------------------
    def run(self, new_data: Path) -> PipelineRun:
        """Take `new_data` through every stage; raises WmsError when a stage cannot go on."""
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        run_id = f"{stamp}-{uuid.uuid4().hex[:6]}"
        run = PipelineRun(run_id, str(new_data), self.project.runs_dir / run_id)
        return self._execute(run, set())

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
        return self._execute(run, keep)

    def _execute(self, run: PipelineRun, keep: set[str]) -> PipelineRun:
        self.last_run = run
        store_cfg = self.project.settings.store
        path = f"{self.store.root}/{LOCK_FILE}"
        with ExitStack() as stack:
            try:
                lock = stack.enter_context(
                    lease(
                        self.store.fs,
                        path,
                        owner=f"pipeline run {run.run_id} ({default_owner()})",
                        ttl_seconds=store_cfg.lock_ttl_seconds,
                        wait_seconds=store_cfg.lock_wait_seconds,
                        on_wait=lambda holder: self.notify(
                            f"waiting up to {store_cfg.lock_wait_seconds:g} s for "
                            f"{holder.get('owner', '?')} to finish"
                        ),
                    )
                )
            except LeaseHeld as exc:
                raise BackendError(
                    f"another pipeline is running on the dataset store {self.store.url}: "
                    f"{exc.holder.get('owner', '?')} (its lock expires {exc.holder.get('expires_at', '?')}); "
                    "wait for it to finish and run again, or raise store.lock_wait_seconds to wait longer"
                ) from None
            run.save()
            stack.enter_context(signals_raise(self._on_repeat_signal))
            stack.enter_context(Heartbeat(self._beat_interval(), lambda: self._beat(path, lock), self.notify))
            self._guarded(run, keep)
        return run

    def _guarded(self, run: PipelineRun, keep: set[str]) -> None:
        try:
            self._stages(run, keep)
            run.status = "ok"
        except BaseException as exc:
            run.status = "failed"
            run.failed_stage = next((s for s in STAGES if run.stages[s].status == "failed"), None)
            what = str(exc) if isinstance(exc, WmsError | Interrupted) else type(exc).__name__
            where = f" at {run.failed_stage}" if run.failed_stage else ""
            run.summary = f"failed{where}: {what}; continue with `wms pipeline resume {run.run_id}`"
            raise
        finally:
            self._release(run)
            for record in run.stages.values():
                if record.status == "pending":
                    record.status = "skipped"
            run.finished_at = now_iso()
            run.save()

    def _beat_interval(self) -> float:
        settings = self.project.settings
        return min(settings.store.lock_ttl_seconds, settings.compute.lease_minutes * 60) / 3

    def _beat(self, lock_path: str, lock: dict[str, str]) -> None:
        renew(self.store.fs, lock_path, lock, self.project.settings.store.lock_ttl_seconds)
        if self._held_since is not None:
            self.compute.renew_lease()

    def _on_repeat_signal(self, name: str) -> None:
        self.notify(f"{name} again: still releasing compute, please wait (the lease reaper is the backstop)")

    def _release(self, run: PipelineRun) -> None:
        """The safety net: stop compute if the stop_compute stage did not get to it."""
        if self._held_since is None:
            return
        self.notify("stop_compute did not finish; stopping compute again")
        try:
            self._stop_compute(run)
            run.compute["released_by"] = "safety net"
        except Exception as exc:  # the lease reaper is the last resort; say so, do not mask the cause
            run.compute["released_by"] = f"nobody: {exc}; `wms compute reap` stops it when the lease expires"
            self.notify(f"could not stop compute ({exc}); it is stopped when its lease expires")

    @contextmanager
    def stage(self, run: PipelineRun, name: str, fault_at_entry: bool = True) -> Iterator[StageRecord]:
        record = run.stages[name]
        record.status = "running"
        record.started_at = now_iso()
        self.reporter.stage_started(record)
        run.save()
        started = time.perf_counter()
        try:
            if fault_at_entry:
                self._maybe_fault(name)
            yield record
            record.status = "ok" if record.status == "running" else record.status
        except BaseException as exc:
            record.status = "failed"
            if isinstance(exc, WmsError | Interrupted):
                record.error = str(exc)
            else:
                record.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            record.seconds = round(time.perf_counter() - started, 2)
            record.finished_at = now_iso()
            run.save()
            self.reporter.stage_done(record)

    def _maybe_fault(self, name: str) -> None:
        if self.fault is None or self.fault[0] != name:
            return
        if self.fault[1] is not None:
            os.kill(os.getpid(), signal.Signals[self.fault[1]])
            time.sleep(5)  # the handler raises as soon as the signal is delivered
        raise InjectedFault(f"fault injected at stage {name} (WMS_FAULT_STAGE); unset it to run normally")

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
            dataset = self._restore_dataset(run, version) if "merge" in keep else self.work_dir
            try:
                with self.stage(run, "start_compute", fault_at_entry=False) as st:
                    self._start_compute(run, st)
                if "train" in keep:
                    trained = load_trained(run.run_dir)
                else:
                    with self.stage(run, "train") as st:
                        trained = self._train(run, dataset, version, st)
                with self.stage(run, "gate") as st:
                    decision = self._gate(run, dataset, trained)
                    st.outcome = ("pass: " if decision.promote else "fail: ") + decision.reason
            finally:
                with self.stage(run, "stop_compute") as st:
                    st.outcome = self._stop_compute(run)

        if "promote" not in keep:
            with self.stage(run, "promote") as st:
                if decision.promote:
                    model_version = self._promote(run, trained, decision, version)
                    st.outcome = f"version {model_version} is now production"
                else:
                    st.status = "skipped"
                    st.outcome = "nothing moved: production and data/dataset.json stay as they were"
        if not run.summary:
            run.summary = self._restored_summary(run, decision)
        if "publish" not in keep:
            with self.stage(run, "publish"):
                self._publish(run)
        with self.stage(run, "deploy"):
            self._deploy(run)

    def _merge_and_validate(self, run: PipelineRun, new_data: Path) -> str | None:
        """The merged version, stored once valid; None when the batch holds nothing new."""
        settings = self.project.settings
        pointer = read_pointer(self.project.path(settings.data.pointer))
        base = pointer["version"] if pointer else None
        run.outputs["base_version"] = base
        with self.stage(run, "merge") as st:
            if settings.data.auto_prepare:
                new_data = self._prepare(run, new_data)
            # Conflicts stop here, before anything is written; orphans go on to validation's report.
            plan = self.store.plan(new_data, base, allow_orphans=True)
            dataset = self._merge(base, new_data, plan)
            st.outcome = (
                f"{len(plan.added)} new, {len(plan.unchanged)} already present → "
                f"version {plan.version or 'none'} ({len(plan.pairs)} pairs, base {base or 'none'})"
            )
            run.outputs["dataset_version"] = plan.version
            run.outputs["work_dir"] = str(dataset)
        if not plan.added and not plan.orphans:
            run.summary = f"not promoted: no new pairs in {new_data} (version {base} already holds them)"
            return None
        with self.stage(run, "validate") as st:
            self._validate(run, dataset, st)
            version = self.store.ingest(dataset, base).version
            run.outputs["dataset_version"] = version
        return version

    def _start_compute(self, run: PipelineRun, st: StageRecord) -> None:
        compute = self.compute
        self._held_since = time.monotonic()
        started = compute.start()
        run.compute.update(backend=compute.name, instance_id=started.instance_id, public_ip=started.public_ip)
        run.save()
        self._maybe_fault("start_compute")  # after the start, as a readiness timeout would fail
        ready = compute.wait_ready()
        where = f" {ready.instance_id}" if ready.instance_id else ""
        st.outcome = f"{compute.name}{where}: {ready.state}" + (
            f" at {ready.public_ip}" if ready.public_ip else ""
        )

    def _stop_compute(self, run: PipelineRun) -> str:
        stopped = self.compute.stop()
        held = time.monotonic() - self._held_since if self._held_since is not None else 0.0
        self._held_since = None
        usage = run.compute
        usage["instance_seconds"] = round(usage.get("instance_seconds", 0.0) + held, 1)
        price = self.project.settings.compute.hourly_price_usd
        usage["hourly_price_usd"] = price
        usage["cost_usd"] = cost_usd(usage["instance_seconds"], price)
        return f"{self.compute.name}: {stopped.state} (held {held:.0f} s this time)"

    def _train(self, run: PipelineRun, dataset: Path, version: str, st: StageRecord) -> TrainedRun:
        trained = train_and_log(self.project, dataset, self.registry, version, self.reporter.train_reporter())
        st.outcome = (
            f"run {trained.run_id[:8]}: test Dice {trained.test_metrics['dice']:.4f}, "
            f"IoU {trained.test_metrics['iou']:.4f} (best epoch {trained.result.best_epoch})"
        )
        run.outputs["mlflow_run_id"] = trained.run_id
        save_trained(run.run_dir, trained)  # so a resumed run does not train again
        return trained

    def _restore_dataset(self, run: PipelineRun, version: str) -> Path:
        """The stored version in the work folder again (only missing files are copied)."""
        pulled = self.store.pull(version, self.work_dir)
        for leftover in pulled.extra:
            Path(leftover).unlink()
        return self.work_dir

    def _restored_summary(self, run: PipelineRun, decision: GateDecision) -> str:
        if run.promoted:
            return f"promoted version {run.outputs.get('model_version', '?')}: {decision.reason}"
        return f"not promoted: {decision.reason}"

    def _publish(self, run: PipelineRun) -> None:
        """On a data branch: swap the incoming pairs for the pointers and merge (or open the PR)."""
        from wms.vcs.publish import NOT_ON_DATA_BRANCH, dataset_summary, publish_promotion

        st = run.stages["publish"]
        if not run.promoted:
            st.status, st.outcome = "skipped", "not promoted: the data branch stays for review"
            return
        report = run.outputs.get("gate_report")
        outcome = publish_promotion(
            self.project,
            branch=None,
            gate_markdown=Path(report).read_text() if report else run.summary,
            dataset_summary=dataset_summary(self.project),
        )
        run.outputs["published"] = outcome
        st.outcome = outcome
        if outcome == NOT_ON_DATA_BRANCH:
            st.status = "skipped"

    def _deploy(self, run: PipelineRun) -> None:
        """The promoted model to the deploy target, checked before it takes traffic."""
        from wms.deploy import make_deployer

        st = run.stages["deploy"]
        if not run.promoted:
            st.status, st.outcome = "skipped", "not promoted: what serves now keeps serving"
            return
        if not self.project.settings.deploy.in_pipeline:
            st.status, st.outcome = (
                "skipped",
                "deploy.in_pipeline is off (`wms deploy` or the workflow deploys)",
            )
            return
        result = make_deployer(self.project, self.notify, self.registry).deploy(
            str(run.outputs["model_version"])
        )
        run.outputs["deployed"] = result.url
        st.outcome = result.summary

    def _prepare(self, run: PipelineRun, new_data: Path) -> Path:
        """Raw photos to the training contract (EXIF applied, size x size, binary masks)."""
        report = prepare_dataset(new_data, run.run_dir / "prepared", size=self.project.settings.data.size)
        if report.skipped:
            first = report.skipped[0]
            raise DataError(
                f"{len(report.skipped)} file(s) in {new_data} could not be prepared "
                f"(first: {first.path}: {first.reason}); fix or remove them and run again"
            )
        return report.out

    def _merge(self, base: str | None, new_data: Path, plan: IngestPlan) -> Path:
        """The base version plus the new pairs, in the local work folder (nothing in the store yet)."""
        work = self.work_dir
        if base:
            pulled = self.store.pull(base, work)
            for leftover in pulled.extra:  # files of an earlier run that was not kept
                Path(leftover).unlink()
        else:
            shutil.rmtree(work, ignore_errors=True)
            for kind in ("images", "masks"):
                (work / kind).mkdir(parents=True)
        for pair in plan.new_pairs:
            shutil.copy2(pair.image, work / "images" / pair.image.name)
            shutil.copy2(pair.mask, work / "masks" / pair.mask.name)
        for orphan in plan.orphans:
            shutil.copy2(orphan, work / orphan.parent.name / orphan.name)
        return work

    def _validate(self, run: PipelineRun, dataset: Path, st: StageRecord) -> None:
        report = validate_dataset(dataset, size=self.project.settings.data.size)
        (run.run_dir / "validation.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        (run.run_dir / "validation.md").write_text(report.to_markdown())
        if not report.ok:
            codes = sorted({i.code for i in report.errors})
            raise DataError(
                f"validation failed: {len(report.errors)} error(s) ({', '.join(codes)}); "
                f"fix the new data and run again — report: {run.run_dir / 'validation.md'}"
            )
        st.outcome = f"{report.pairs} pairs valid, {len(report.warnings)} warning(s)"

    def _gate(self, run: PipelineRun, dataset: Path, trained: TrainedRun) -> GateDecision:
        """Score both models' ONNX exports on the same test images, decide, report, register the candidate.

        The candidate's export is first checked against its torch weights; one that disagrees
        raises GateError before anything is registered.
        """
        gate = self.project.settings.gate
        test_pairs = split_pairs(self.project, dataset)["test"]
        with self.registry.fetched(trained.run_id) as folder:
            check_onnx_parity(folder, test_pairs, gate.onnx_min_agreement)
            scores = evaluate_onnx(folder, test_pairs)
        production = self.registry.production()
        baseline: list[ImageScore] | None = None
        error = None
        if production is not None:
            try:
                with self.registry.fetched(production.version) as folder:
                    if not (folder / ONNX_FILE).is_file():
                        raise GateError(
                            f"it has no {ONNX_FILE} (trained with train.export_onnx = false?), and the gate "
                            "scores the ONNX export the service runs"
                        )
                    baseline = evaluate_onnx(folder, test_pairs)
            except Exception as exc:  # any way the old model fails to load or run on today's data
                error = str(exc) if isinstance(exc, WmsError) else f"{type(exc).__name__}: {exc}"
        decision = decide(
            gate,
            scores,
            baseline,
            production.version if production else None,
            baseline_error=error,
        )
        report_dir = run.run_dir / "gate"
        write_report(decision, report_dir)
        self.registry.log_to_run(
            trained.run_id, report_dir, "gate", {"wms.gate": "pass" if decision.promote else "fail"}
        )
        candidate = self.registry.register(
            trained.run_id,
            tags={
                "gate": "pass" if decision.promote else "fail",
                "gate_reason": decision.reason[:4000],
                "pipeline_run": run.run_id,
            },
        )
        run.outputs["gate"] = {k: v for k, v in decision.to_dict().items() if k != "per_image"}
        run.outputs["gate_report"] = str(report_dir / REPORT_MD)
        run.outputs["candidate_version"] = candidate.version
        if decision.promote:
            run.summary = "promoted"
        else:
            kept = f"production stays version {production.version}" if production else "nothing in production"
            run.summary = (
                f"not promoted: {decision.reason}; {kept} "
                f"(candidate registered as version {candidate.version} for review)"
            )
        return decision

    def _promote(
        self, run: PipelineRun, trained: TrainedRun, decision: GateDecision, dataset_version: str
    ) -> str:
        settings = self.project.settings
        version = run.outputs["candidate_version"]
        move = move_production(
            self.registry,
            self.project.path(settings.tracking.pointer_dir),
            version,
            action="promote",
            reason=decision.reason,
            by=f"wms pipeline run {run.run_id}",
        )
        self.store.point(self.project.path(settings.data.pointer), dataset_version, settings.store.url)
        dice = trained.test_metrics["dice"]
        baseline = decision.comparison("dice").baseline
        versus = (
            f"vs baseline {baseline:.4f} (version {move['from_version']})"
            if baseline is not None
            else f"(floor {settings.gate.floor:.2f})"
        )
        run.promoted = True
        run.outputs["model_version"] = version
        run.summary = f"promoted version {version}: test Dice {dice:.4f} {versus}"
        return str(version)
