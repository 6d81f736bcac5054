"""The training-data pipeline: merge → validate → start compute → train → gate → stop compute → promote.

    wms pipeline run --new-data data/incoming

Each stage is recorded in `.wms/runs/<run-id>/run.json` with its status, timing and
outcome. Compute is stopped in `finally`, whatever happened while it ran. Nothing moves
(no alias, no pointer file) unless the gate says the candidate is better.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from wms.compute import make_compute
from wms.config import Project
from wms.data.pointer import read_pointer
from wms.data.prepare import prepare_dataset
from wms.data.store import IngestPlan, open_store
from wms.data.validate import validate_dataset
from wms.errors import DataError, WmsError
from wms.gate import REPORT_MD, GateDecision, decide, write_report
from wms.registry import Registry, move_production
from wms.train.evaluate import ImageScore, evaluate
from wms.train.loop import TrainReporter
from wms.train.run import TrainedRun, split_pairs, train_and_log
from wms.train.segmenter import Segmenter

STAGES = ("merge", "validate", "start_compute", "train", "gate", "stop_compute", "promote")


@dataclass
class StageRecord:
    """One stage of one run."""

    name: str
    status: str = "pending"  # pending | running | ok | failed | skipped
    seconds: float = 0.0
    outcome: str = ""
    error: str | None = None


class PipelineReporter(Protocol):
    """Shows the run to a person; the CLI prints each stage as it ends."""

    def stage_started(self, stage: StageRecord) -> None: ...
    def stage_done(self, stage: StageRecord) -> None: ...
    def train_reporter(self) -> TrainReporter | None: ...


@dataclass
class PipelineRun:
    """The record of a pipeline run, saved after every stage."""

    run_id: str
    new_data: str
    run_dir: Path
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    stages: dict[str, StageRecord] = field(default_factory=lambda: {s: StageRecord(s) for s in STAGES})
    promoted: bool = False
    summary: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        body = asdict(self) | {
            "run_dir": str(self.run_dir),
            "stages": [asdict(s) for s in self.stages.values()],
        }
        tmp = self.run_dir / "run.json.tmp"
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        tmp.replace(self.run_dir / "run.json")


class Pipeline:
    """Runs the stages in order for one batch of new data."""

    def __init__(self, project: Project, registry: Registry, reporter: PipelineReporter) -> None:
        self.project = project
        self.registry = registry
        self.reporter = reporter
        self.store = open_store(project)
        self.work_dir = project.state_dir / "work" / "dataset"

    @contextmanager
    def stage(self, run: PipelineRun, name: str) -> Iterator[StageRecord]:
        record = run.stages[name]
        record.status = "running"
        self.reporter.stage_started(record)
        started = time.perf_counter()
        try:
            yield record
            record.status = "ok" if record.status == "running" else record.status
        except BaseException as exc:
            record.status = "failed"
            record.error = str(exc) if isinstance(exc, WmsError) else f"{type(exc).__name__}: {exc}"
            raise
        finally:
            record.seconds = round(time.perf_counter() - started, 2)
            run.save()
            self.reporter.stage_done(record)

    def run(self, new_data: Path) -> PipelineRun:
        """Take `new_data` through every stage; raises WmsError when a stage cannot go on."""
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        run_id = f"{stamp}-{uuid.uuid4().hex[:6]}"
        run = PipelineRun(run_id, str(new_data), self.project.runs_dir / run_id)
        run.save()
        try:
            self._run(run, new_data)
        except BaseException as exc:
            run.summary = f"failed: {exc}" if isinstance(exc, WmsError) else f"failed: {type(exc).__name__}"
            raise
        finally:
            for record in run.stages.values():
                if record.status == "pending":
                    record.status = "skipped"
            run.save()
        return run

    def _run(self, run: PipelineRun, new_data: Path) -> None:
        settings = self.project.settings
        pointer = read_pointer(self.project.path(settings.data.pointer))
        base = pointer["version"] if pointer else None

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
        if not plan.added and not plan.orphans:
            run.summary = f"not promoted: no new pairs in {new_data} (version {base} already holds them)"
            return

        with self.stage(run, "validate") as st:
            self._validate(run, dataset, st)
            version = self.store.ingest(dataset, base).version

        compute = make_compute(settings.compute)
        try:
            with self.stage(run, "start_compute") as st:
                st.outcome = f"{compute.name}: {compute.start().state}"
            with self.stage(run, "train") as st:
                trained = train_and_log(
                    self.project, dataset, self.registry, version, self.reporter.train_reporter()
                )
                st.outcome = (
                    f"run {trained.run_id[:8]}: test Dice {trained.test_metrics['dice']:.4f}, "
                    f"IoU {trained.test_metrics['iou']:.4f} (best epoch {trained.result.best_epoch})"
                )
                run.outputs["mlflow_run_id"] = trained.run_id
            with self.stage(run, "gate") as st:
                decision = self._gate(run, dataset, trained)
                st.outcome = ("pass: " if decision.promote else "fail: ") + decision.reason
        finally:
            with self.stage(run, "stop_compute") as st:
                st.outcome = f"{compute.name}: {compute.stop().state}"

        with self.stage(run, "promote") as st:
            if decision.promote:
                model_version = self._promote(run, trained, decision, version)
                st.outcome = f"version {model_version} is now production"
            else:
                st.status = "skipped"
                st.outcome = "nothing moved: production and data/dataset.json stay as they were"
        run.save()

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
        """Score production on the candidate's test images, decide, report, register the candidate."""
        production = self.registry.production()
        baseline: list[ImageScore] | None = None
        error = None
        if production is not None:
            test_pairs = split_pairs(self.project, dataset)["test"]
            try:
                with self.registry.fetched(production.version) as folder:
                    baseline = evaluate(Segmenter.load(folder), test_pairs)
            except Exception as exc:  # any way the old model fails to load or run on today's data
                error = str(exc) if isinstance(exc, WmsError) else f"{type(exc).__name__}: {exc}"
        decision = decide(
            self.project.settings.gate,
            trained.test_scores,
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
