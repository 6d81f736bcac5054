"""The saved-model format, without torch: serving with ONNX Runtime imports only this."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
        fields = json.loads(path.read_text())
        refine = fields.pop("refine", None)
        return cls(**fields, refine=RefineSpec(**refine) if refine else None)
