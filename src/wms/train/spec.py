"""The saved-model format, without torch: serving with ONNX Runtime imports only this."""

from __future__ import annotations

from dataclasses import dataclass, field
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
