"""The deploy-target interface and what every target shares (the factory is `wms.deploy`).

A deploy puts one registered model version in front of users and proves it answers before
anything old is removed: the new version must be ready and must give, for a reference photo,
the mask the model gives in-process (ONNX Runtime here, the same bytes the server loads).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from wms.config import Project
from wms.errors import BackendError, ConfigError, DataError
from wms.serve.model import ModelCard, ServedModel, load_folder
from wms.train.preprocess import open_image

if TYPE_CHECKING:
    from wms.registry import Registry

Echo = Callable[[str], None]


@dataclass
class DeployResult:
    """What a deploy did; `summary` is the one line a pipeline report shows."""

    target: str
    version: str
    url: str
    agreement: float
    steps: list[str] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return (
            f"model {self.version} serving at {self.url} ({self.target}; smoke mask agreement "
            f"{self.agreement:.2%})"
        )


class Deployer(Protocol):
    """A deploy target: plan, deploy (check, then switch), stop."""

    name: str

    def plan(self, model_ref: str = "production") -> list[str]: ...
    def deploy(self, model_ref: str = "production") -> DeployResult: ...
    def stop(self) -> str: ...


def open_registry(project: Project, registry: Registry | None) -> Registry:
    if registry is not None:
        return registry
    from wms.registry import MlflowRegistry

    return MlflowRegistry(project)


def planned_card(project: Project, registry: Registry | None, model_ref: str) -> ModelCard:
    """The card of the version `model_ref` names, read without changing anything: a dry run stops
    where the deploy would (no such version or alias, no ONNX file recorded)."""
    return ModelCard.from_record(open_registry(project, registry).get(model_ref))


def stage_model(registry: Registry, model_ref: str, dst: Path) -> ServedModel:
    """The model's folder under `dst` (fetched once per version) with its card, loaded and verified."""
    card = ModelCard.from_record(registry.get(model_ref))
    folder = dst / f"v{card.version}"
    existing = ModelCard.read(folder) if (folder / "model.onnx").is_file() else None
    if existing is None or existing.onnx_sha256 != card.onnx_sha256:
        partial = dst / f".v{card.version}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        fetched = registry.download(card.run_id, partial)
        card.write(fetched)
        shutil.rmtree(folder, ignore_errors=True)
        fetched.rename(folder)
        shutil.rmtree(partial, ignore_errors=True)
    return load_folder(folder, card, threads=1)


def forget_other_models(dst: Path, version: str) -> None:
    """Remove from `dst` the model folders of every version but `version`, and fetches a killed
    deploy left unfinished: each deploy stages its version there, and every promotion's would
    stay for good (a rollback fetches its version again)."""
    if not dst.is_dir():
        return
    for path in dst.iterdir():
        if path.name != f"v{version}":
            shutil.rmtree(path, ignore_errors=True)


# The smoke check's query: its photo is ours, not a user's, and must never reach the capture
# inbox, where it would be suggested for labelling and skew the drift report.
SMOKE_PARAMS = {"capture": "false"}


def reference_photo(project: Project) -> tuple[bytes, str]:
    """The smoke check's photo as PNG bytes: deploy.smoke_image, or a synthetic meter."""
    path = project.settings.deploy.smoke_image
    if path:
        try:
            image = open_image(project.path(path))
        except (OSError, DataError) as exc:  # DataError: open_image's, naming the file
            raise ConfigError(
                f"deploy.smoke_image {path!r} cannot be read ({exc}); point it at a photo"
            ) from None
        name = Path(path).name
    else:
        from wms.data.synth import synth_pair

        image, name = synth_pair(seed=7, index=0, size=512)[0], "synthetic-meter.png"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), name


def expected_mask(model: ServedModel, photo: bytes) -> np.ndarray:
    """The mask the model itself gives for the reference photo."""
    from wms.serve.imaging import decode_upload

    (mask,) = model.segmenter.predict_masks([decode_upload(photo, 10**9)])
    return mask


def agreement(answer_png: bytes, expected: np.ndarray) -> float:
    """Share of pixels where a served mask (PNG) equals the expected one; 0 when it cannot be read."""
    try:
        with Image.open(io.BytesIO(answer_png), formats=("PNG",)) as img:
            got = np.asarray(img.convert("L")) > 127
    except OSError:
        return 0.0
    if got.shape != expected.shape:
        return 0.0
    return float((got == expected).mean())


def check_agreement(value: float, minimum: float, where: str) -> None:
    if value < minimum:
        raise BackendError(
            f"smoke check failed at {where}: the served mask matches the expected one on {value:.2%} of "
            f"pixels, below deploy.min_agreement {minimum:.2%}; nothing was switched"
        )
