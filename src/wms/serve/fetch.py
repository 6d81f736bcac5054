"""The model a command names: a model folder, or a registry alias or version fetched and verified.

Kept apart from `wms.serve.model` so that the server's model code never reaches for the registry
(which itself writes `wms.mlflow_model`'s wrapper around `wms.serve.model`).
"""

from __future__ import annotations

from wms.config import Project
from wms.serve.model import ModelCard, ServedModel, load_folder


def load_model(project: Project, ref: str, threads: int = 0) -> ServedModel:
    """A model folder (a path that exists), or a registry alias/version fetched and verified."""
    folder = project.path(ref)
    if folder.is_dir():
        return load_folder(folder, threads=threads)
    from wms.registry import MlflowRegistry  # mlflow only when the registry is asked

    registry = MlflowRegistry(project)
    card = ModelCard.from_record(registry.get(ref))
    with registry.fetched(card.run_id) as fetched:
        return load_folder(fetched, card, threads)
