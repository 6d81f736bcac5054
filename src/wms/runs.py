"""The record of a pipeline run: its stages, what they produced, and where a resumed run starts.

.wms/runs/<run-id>/run.json     status, timings, outcome and error of every stage,
                                plus the outputs later stages need (dataset version,
                                work folder, MLflow run, gate decision, compute use)
.wms/runs/<run-id>/train.json   the candidate's test scores, so the gate can run again
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from wms.errors import BatchError, ConfigError, MainMoved, ModelPruned, UsageError, WmsError
from wms.files import make_folders, write_text_atomic
from wms.gate import GateDecision, MetricComparison, RuleVerdict
from wms.guards import Interrupted
from wms.scores import ImageScore

# The dataset version of a run on a folder as it is (`wms train DIR`), not a version of the store.
UNVERSIONED = "unversioned"

STAGES = (
    "merge",
    "validate",
    "start_compute",
    "train",
    "gate",
    "stop_compute",
    "promote",
    "publish",
    "reconcile",
    "deploy",
)


class InjectedFault(WmsError):
    """A fault injected with WMS_FAULT_STAGE, to test that the pipeline releases what it holds."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class StageRecord:
    """One stage of one run."""

    name: str
    status: str = "pending"  # pending | running | ok | failed | skipped
    seconds: float = 0.0
    outcome: str = ""
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


@dataclass
class PipelineRun:
    """The record of a pipeline run, saved after every stage."""

    run_id: str
    new_data: str
    run_dir: Path
    started_at: str = field(default_factory=now_iso)
    stages: dict[str, StageRecord] = field(default_factory=lambda: {s: StageRecord(s) for s in STAGES})
    promoted: bool = False
    summary: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    status: str = "running"  # running | ok | failed
    failed_stage: str | None = None
    finished_at: str | None = None
    next_step: str = ""  # after a failure: what to run to go on, e.g. `wms pipeline resume RUN_ID`

    def save(self) -> None:
        make_folders(self.run_dir)
        body = asdict(self) | {
            "run_dir": str(self.run_dir),
            "stages": [asdict(s) for s in self.stages.values()],
        }
        write_text_atomic(self.run_dir / "run.json", json.dumps(body, indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> PipelineRun:
        """Read a run record written by `save`; UsageError when it cannot be read."""
        path = run_dir / "run.json"
        try:
            body = json.loads(path.read_text())
            known = {f.name for f in fields(StageRecord)}
            stages = {
                s["name"]: StageRecord(**{k: v for k, v in s.items() if k in known}) for s in body["stages"]
            }
            for name in STAGES:  # a record from before a stage existed
                stages.setdefault(name, StageRecord(name))
            simple = {f.name for f in fields(cls)} - {"run_dir", "stages"}
            return cls(run_dir=run_dir, stages=stages, **{k: v for k, v in body.items() if k in simple})
        except (ValueError, TypeError, KeyError, AttributeError):
            raise unreadable(path) from None

    def fail(self, exc: BaseException) -> str:
        """Record the run as failed by `exc`, with what to do next; the batch's outcome.

        Only the batch's own fault (BatchError) rejects it; a broken store or main leaves it to
        the sweeper, and a batch main already has is promoted whatever failed after.
        """
        self.status = "failed"
        self.failed_stage = next((s for s in STAGES if self.stages[s].status == "failed"), None)
        what = str(exc) if isinstance(exc, WmsError | Interrupted) else type(exc).__name__
        where = f" at {self.failed_stage}" if self.failed_stage else ""
        fault = "rejected" if isinstance(exc, BatchError) else "failed"
        if self.promoted and self.outputs.get("merged") and self.outputs.get("batch"):
            # Main has the batch: only the alias or the deployment is left, and a new run of the
            # batch would find nothing new in it.
            fault = "promoted"
            self.next_step = "main has the batch; `wms model reconcile --deploy` finishes the rest"
        elif fault == "rejected" and self.outputs.get("batch"):  # finished: resume refuses it
            self.next_step = "fix the pairs and push them again (a new data branch)"
        elif not isinstance(exc, MainMoved | ModelPruned):
            # Run again, not resumed: a batch built on an old main, or a candidate whose files
            # `wms model prune` deleted (its error says what to do).
            self.next_step = f"continue with `wms pipeline resume {self.run_id}`"
        self.summary = f"failed{where}: {what}" + (f"; {self.next_step}" if self.next_step else "")
        return fault

    def recorded_path(self, key: str) -> Path | None:
        """A file or folder of this run that its outputs name (`gate_report`, `promotion_files`),
        in the run's folder as it is now: the record names it by its full path, which a project
        moved since (renamed, copied to another machine) no longer has."""
        value = self.outputs.get(key)
        if not value:
            return None
        parts = Path(value).parts
        if self.run_id not in parts:
            return Path(value)
        return self.run_dir.joinpath(*parts[len(parts) - parts[::-1].index(self.run_id) :])

    @property
    def compute(self) -> dict[str, Any]:
        """Compute use of this run: backend, instance, instance-seconds, cost."""
        return cast(dict[str, Any], self.outputs.setdefault("compute", {"instance_seconds": 0.0}))


def resume_plan(run: PipelineRun) -> tuple[str, set[str]]:
    """Where a resumed run starts, and the finished stages it keeps."""
    first = next((s for s in STAGES if run.stages[s].status in ("pending", "running", "failed")), None)
    if first is None or run.status == "ok":
        raise UsageError(f"run {run.run_id} finished ({run.summary or 'ok'}); there is nothing to resume")
    keep = {s for s in STAGES[: STAGES.index(first)] if run.stages[s].status in ("ok", "skipped")}
    if first == "validate":
        keep.discard("merge")  # the merged folder is only kept once validation stored it as a version
    if first in ("train", "gate"):
        keep.discard("start_compute")  # training and the gate run while compute is held
    start = next(s for s in STAGES if s not in keep)
    return start, keep


def parse_fault(spec: str | None) -> tuple[str, str | None] | None:
    """`WMS_FAULT_STAGE` as (stage, signal name or None)."""
    if not spec:
        return None
    stage, _, sig = spec.partition(":")
    if stage not in STAGES or (sig and sig.upper() not in ("SIGTERM", "SIGINT")):
        raise ConfigError(
            f"WMS_FAULT_STAGE={spec!r}: write a stage ({', '.join(STAGES)}), optionally :SIGTERM or :SIGINT"
        )
    return stage, sig.upper() or None


@dataclass
class TrainedRun:
    """A finished, logged training run: what the gate and promote read (the weights stay in MLflow)."""

    run_id: str
    test_scores: list[ImageScore]
    test_metrics: dict[str, float]
    model_sha256: str
    best_epoch: int | None = None  # None in a record written before it was kept


def save_trained(run_dir: Path, trained: TrainedRun) -> None:
    """What the gate and promote need from a training run, in `train.json`."""
    body = {
        "run_id": trained.run_id,
        "model_sha256": trained.model_sha256,
        "best_epoch": trained.best_epoch,
        "test_metrics": trained.test_metrics,
        "test_scores": [asdict(s) for s in trained.test_scores],
    }
    write_text_atomic(run_dir / "train.json", json.dumps(body) + "\n")  # whole or not at all, as run.json


def load_trained(run_dir: Path) -> TrainedRun:
    """The training run saved by `save_trained`, for a resumed gate or promote."""
    path = run_dir / "train.json"
    try:
        body = json.loads(path.read_text())
        return TrainedRun(
            body["run_id"],
            [ImageScore(**s) for s in body["test_scores"]],
            body["test_metrics"],
            body["model_sha256"],
            body.get("best_epoch"),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        raise unreadable(path) from None


def unreadable(path: Path) -> UsageError:
    """A run's record that is cut short (a power loss, a full disk) or edited: it cannot go on."""
    return UsageError(
        f"{path} cannot be read (cut short or edited), so that run cannot go on; "
        "run its batch again with `wms pipeline run`"
    )


def load_decision(outputs: dict[str, Any]) -> GateDecision:
    """The gate decision recorded in a run's outputs."""
    body = dict(outputs["gate"])
    body["comparisons"] = [MetricComparison(**c) for c in body.get("comparisons", [])]
    body["rules"] = [RuleVerdict(**r) for r in body.get("rules", [])]
    return GateDecision(**body)
