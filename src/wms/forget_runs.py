"""The MLflow side of `wms data forget`: the drawings of a person's photo that training runs keep.

Every training run logs `worst/NN-<id>.jpg`, its test split's lowest-Dice photos drawn with
their masks (wms.worst), and `plots/val_predictions.jpg`, a sheet of its first validation
photos. A forgotten pair's drawings go: its own `worst/` files, and the sheet of every run
trained on a dataset version that holds the pair in its val split (the sheet may show it; a
sheet cannot lose one photo, and it is a picture for people, not a record). The run's metrics,
tags and model stay: weights are no copy of a photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from wms.errors import RegistryError
from wms.registry import MlflowRegistry
from wms.registry_local import artifact_root, moved_run_folder

WORST, SHEET = "worst", "plots/val_predictions.jpg"
DATASET_TAG = "wms.dataset_version"


@dataclass(frozen=True)
class Drawing:
    """One artifact file of a run that shows (or may show) a forgotten photo."""

    run_id: str
    path: str  # inside the run's artifacts
    artifact_uri: str
    moved: Path | None  # the run's artifact folder, where it moved with the project


def find_drawings(
    registry: MlflowRegistry, ids: list[str], val_versions: dict[str, list[str]]
) -> dict[str, list[Drawing]]:
    """For each id, the drawings the experiment's runs keep of it (`val_versions`: the dataset
    versions that hold the pair in their val split)."""
    found: dict[str, list[Drawing]] = {pid: [] for pid in ids}
    experiment = registry.mlflow.experiment(registry.project.settings.tracking.experiment)
    if experiment is None:
        return found
    root = artifact_root(registry.project, registry.uri)
    # A run deleted in MLflow keeps its files until `mlflow gc`: its drawings go too.
    for run in registry.mlflow.runs([experiment.experiment_id], deleted=True):
        try:
            moved = moved_run_folder(run.info.artifact_uri, run.info.run_id, root) if root else None
        except RegistryError:
            continue  # its files are in neither place: nothing here to delete
        worst = _files(registry, run, moved, WORST)
        sheet = None
        for pid in ids:
            paths = [p for p in worst if p.rsplit("/", 1)[-1].partition("-")[2] == f"{pid}.jpg"]
            if run.data.tags.get(DATASET_TAG) in val_versions.get(pid, []):
                sheet = sheet if sheet is not None else SHEET in _files(registry, run, moved, "plots")
                paths += [SHEET] if sheet else []
            found[pid] += [Drawing(run.info.run_id, p, run.info.artifact_uri, moved) for p in paths]
    return found


def delete_drawings(registry: MlflowRegistry, drawings: list[Drawing]) -> None:
    """Delete them, through MLflow's artifact repository (a folder, S3, a tracking server); a
    sheet that shows two of the photos forgotten goes once."""
    for d in dict.fromkeys(drawings):
        then = "run `wms data forget` again to finish"
        registry.mlflow.delete_artifacts(d.run_id, d.artifact_uri, d.path, d.moved, then)


def drawing_urls(drawings: list[Drawing], destination: str) -> list[str]:
    """Where each drawing is kept when it is on S3: a run logged to S3 itself names its files
    there; one whose files a tracking server proxies (mlflow-artifacts:/<experiment>/<run>/...)
    keeps them under the server's --artifacts-destination, `destination` ("": unknown). The
    others (a folder, a moved project) are left out: a folder keeps no old versions."""
    urls = []
    for d in dict.fromkeys(drawings):
        if d.moved is not None:
            continue
        if d.artifact_uri.startswith("s3://"):
            urls.append(f"{d.artifact_uri.rstrip('/')}/{d.path}")
        elif d.artifact_uri.startswith("mlflow-artifacts:") and destination.startswith("s3://"):
            run_path = urlparse(d.artifact_uri).path.strip("/")
            urls.append(f"{destination.rstrip('/')}/{run_path}/{d.path}")
    return urls


def _files(registry: MlflowRegistry, run: Any, moved: Path | None, folder: str) -> list[str]:
    """The artifact paths of the files directly in the run's `folder`."""
    if moved is not None:
        here = moved / folder
        return [f"{folder}/{p.name}" for p in sorted(here.iterdir()) if p.is_file()] if here.is_dir() else []
    return [a.path for a in registry.mlflow.list_artifacts(run.info.run_id, folder) if not a.is_dir]
