"""The model a command names: a model folder, or a registry alias, version or run id fetched and verified.

Kept apart from `wms.serve.model` so that the server's model code never reaches for the registry
(which itself writes `wms.mlflow_model`'s wrapper around `wms.serve.model`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wms.config import Project
from wms.errors import ModelNotFound
from wms.serve.model import ModelCard, ServedModel, load_folder

if TYPE_CHECKING:
    from wms.registry import ModelRecord


@dataclass(frozen=True)
class NamedModel:
    """A model's files in a folder, and where they came from."""

    folder: Path
    run_id: str | None = None  # None: a folder the command was given
    record: ModelRecord | None = None  # the registered version; None for a folder or an unregistered run

    def identity(self) -> dict[str, Any]:
        """What names the model in a report: its folder, or its version and run id."""
        if self.run_id is None:
            return {"folder": str(self.folder)}
        return ({"version": self.record.version} if self.record else {}) | {"run_id": self.run_id}


@contextmanager
def named_model(project: Project, ref: str) -> Iterator[NamedModel]:
    """A model folder (a path that exists) as it is, or the registry's model `ref` names.

    A registry model is fetched into a temporary folder by run id, so an alias moved meanwhile
    cannot swap the model under its label, and its files are checked against the sha256 its
    run recorded (`MlflowRegistry.download`).
    """
    folder = project.path(ref)
    if folder.is_dir():
        yield NamedModel(folder)
        return
    from wms.registry import RUN_ID, MlflowRegistry  # mlflow only when the registry is asked

    registry = MlflowRegistry(project)
    if RUN_ID.fullmatch(ref):
        record = next((r for r in registry.list() if r.run_id == ref), None)
    else:
        try:
            record = registry.get(ref)
        except ModelNotFound as exc:
            if "/" not in ref and "\\" not in ref:
                raise
            raise ModelNotFound(f"no folder {folder}, and {exc}") from None  # a mistyped path
    run_id = record.run_id if record else ref
    with registry.fetched(run_id) as fetched:
        yield NamedModel(fetched, run_id, record)


def load_model(project: Project, ref: str, threads: int = 0) -> ServedModel:
    """A model folder, or a registered version (alias, number or run id), loaded for serving."""
    with named_model(project, ref) as named:
        if named.run_id is None:
            return load_folder(named.folder, threads=threads)
        if named.record is None:
            raise ModelNotFound(
                f"run {ref} is no registered model version; pass a version or an alias "
                "(see `wms model list`), or a folder from `wms model download`"
            )
        return load_folder(named.folder, ModelCard.from_record(named.record), threads)
