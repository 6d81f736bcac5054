"""The registry's interface: what WMS asks of experiment tracking and the model registry, and
what it gets back. wms.registry implements it with MLflow; code that only passes records or
registries around needs nothing else.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

PRODUCTION, PREVIOUS = "production", "previous"
# Set on a run whose model files `wms model prune` deleted: "<UTC time>: model files deleted (was version 4)".
PRUNED_TAG = "wms.model_pruned"
PRUNED_VERSIONS = re.compile(r"was version ([0-9, ]+)\)")
# Set on a RUNNING run whose process died, as it is marked KILLED (wms.registry_stale): when and why.
KILLED_TAG = "wms.marked_killed"
# Set on a run as it is continued (a job resumed from its checkpoint): the UTC time, its sign of life.
CONTINUED_TAG = "wms.continued_at"


def pruned_message(what: str, note: str) -> str:
    """What to say when `what` (version 4, the model of run 1a2b3c4d) is asked for after a prune."""
    when = note.split("T", 1)[0]
    return (
        f"the model files of {what} were deleted by `wms model prune` on {when} (it never served; its "
        "run keeps the metrics and reports); train again (`wms pipeline run`) or pick another version "
        "(`wms model list`)"
    )


@dataclass(frozen=True)
class ModelRecord:
    """One registered model version as WMS sees it."""

    version: str
    run_id: str
    aliases: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    run_tags: dict[str, str] = field(default_factory=dict)  # the run's `wms.*` tags (hashes, dataset)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunLog(Protocol):
    """What a training run may record."""

    run_id: str

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None: ...
    def log_model(self, local_dir: Path) -> None: ...


class Registry(Protocol):
    """Tracking runs and moving models between aliases."""

    model_name: str

    def start_run(self, name: str, tags: dict[str, str], run_id: str | None = None) -> Any: ...
    def log_to_run(self, run_id: str, local_dir: Path, artifact_path: str, tags: dict[str, str]) -> None: ...
    def register(self, run_id: str, tags: dict[str, str]) -> ModelRecord: ...
    def get(self, ref: str) -> ModelRecord: ...
    def production(self) -> ModelRecord | None: ...
    def previous(self) -> ModelRecord | None: ...
    def promote(self, version: str) -> ModelRecord | None: ...
    def rollback(self) -> tuple[ModelRecord, ModelRecord]: ...
    def list(self) -> list[ModelRecord]: ...
    def download(self, ref: str, dst: Path) -> Path: ...
    def fetched(self, ref: str) -> AbstractContextManager[Path]: ...
