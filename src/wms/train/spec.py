"""The saved-model format, without torch: serving with ONNX Runtime imports only this."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WEIGHTS_FILE = "model.pt"
SPEC_FILE = "model.json"
ONNX_FILE = "model.onnx"  # written by wms.train.export.export_onnx


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

    @classmethod
    def read(cls, path: Path) -> ModelSpec:
        """The spec saved as `model.json` (files from before a field was added still load)."""
        return cls(**json.loads(path.read_text()))
