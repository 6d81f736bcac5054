"""The saved-model format, without torch: serving with ONNX Runtime imports only this."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wms.errors import RegistryError

WEIGHTS_FILE = "model.pt"
SPEC_FILE = "model.json"
ONNX_FILE = "model.onnx"  # written by wms.train.export.export_onnx
# A second stage, when the model has one (wms.refine): its weights and its ONNX export.
REFINE_WEIGHTS_FILE = "refine.pt"
REFINE_ONNX_FILE = "refine.onnx"


@dataclass(frozen=True)
class RefineSpec:
    """A second network that segments the window again in a crop around what the first found.

    The crop is `margin` times the found region's length, turned so that its long axis lies
    level when `align` and the region is at least `elongated` times longer than wide, and
    resized to `size` px. The network is the first one's architecture with `kwargs` (its
    depth may differ); it always predicts with flip averaging (wms.refine says how)."""

    size: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    margin: float = 1.4
    align: bool = True
    elongated: float = 1.0


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild and feed a saved model."""

    architecture: str
    image_size: int
    threshold: float
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Flip test-time augmentation: the logits are the mean of the image's and its mirror image's.
    # Part of the model, so evaluate, predict, the gate and serving (the ONNX graph holds
    # both passes) all predict the same way; it doubles the cost of a prediction.
    tta: bool = False
    refine: RefineSpec | None = None

    @classmethod
    def read(cls, path: Path) -> ModelSpec:
        """The spec saved as `model.json` (files from before a field was added still load)."""
        try:
            fields = json.loads(path.read_text())
            refine = fields.pop("refine", None)
            return cls(**fields, refine=RefineSpec(**refine) if refine else None)
        except (ValueError, TypeError, AttributeError) as exc:  # not JSON, or not a spec's fields
            raise damaged(path, exc) from None


def damaged(path: Path, exc: BaseException) -> RegistryError:
    """The one-line error for a model file that cannot be read (cut short, edited, or another file)."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0]
    return RegistryError(
        f"{path} cannot be read as part of a WMS model ({reason}); fetch the model again with "
        "`wms model download VERSION DIR`, or name a registry version instead of the folder"
    )


# Each file a training run records the sha256 of, and the name of that record (a run's tags
# carry it as `wms.<name>`, a registered version's as `<name>`). refine.onnx is not among them:
# its sha256 is inside model.onnx (wms.train.export), checked when that file is.
RECORDED_HASHES = (
    (WEIGHTS_FILE, "model_sha256"),
    (REFINE_WEIGHTS_FILE, "refine_sha256"),
    (ONNX_FILE, "onnx_sha256"),
)


def verify_model_folder(folder: Path, recorded: dict[str, str]) -> str:
    """Check the model files against the sha256 recorded at training; says what was checked.

    Raises RegistryError naming the first file that differs. A file, or a record, that is
    absent is not checked (a model trained without ONNX export has no model.onnx).
    """
    from wms.data.hashes import sha256_file

    checked = []
    for name, key in RECORDED_HASHES:
        expected = recorded.get(key)
        if expected is None or not (folder / name).exists():
            continue
        actual = sha256_file(folder / name)
        if actual != expected:
            raise RegistryError(
                f"{name} has sha256 {actual[:12]}… but the registry recorded {expected[:12]}…; "
                "the stored model was changed or damaged — do not use it"
            )
        checked.append(name)
    return f"sha256 checked: {', '.join(checked)}" if checked else ""
