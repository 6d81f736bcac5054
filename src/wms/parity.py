"""Does a model's ONNX export predict what its torch weights predict?

The gate scores the export (what the service runs), so before a candidate is registered the
pipeline checks that the export is faithful: on the test images, the binary masks of both,
each at its image's own size, must agree on at least `gate.onnx_min_agreement` of the pixels.
This module imports torch; `wms.gate` stays free of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wms.data.pairs import Pair
from wms.errors import GateError
from wms.train.preprocess import open_image
from wms.train.spec import ONNX_FILE


@dataclass(frozen=True)
class Parity:
    """How far the ONNX masks agree with the torch masks, over all pixels of the images."""

    pixels: int
    differing: int

    @property
    def agreement(self) -> float:
        return 1.0 - self.differing / self.pixels if self.pixels else 1.0


def onnx_parity(model_folder: Path, pairs: Sequence[Pair], batch_size: int = 8) -> Parity:
    """Compare `model.onnx` on ONNX Runtime with `model.pt` on torch (CPU), pixel by pixel.

    Raises GateError when the export is missing or cannot be loaded or run.
    """
    from wms.train.export import OnnxSegmenter
    from wms.train.segmenter import Segmenter

    if not (model_folder / ONNX_FILE).is_file():
        raise GateError(
            f"the candidate has no {ONNX_FILE}, and the gate judges the ONNX export the service "
            "runs; set train.export_onnx = true and run the pipeline again"
        )
    reference = Segmenter.load(model_folder)
    try:
        exported = OnnxSegmenter.load(model_folder, threads=0)
        pixels = differing = 0
        for start in range(0, len(pairs), batch_size):
            images = [open_image(p.image) for p in pairs[start : start + batch_size]]
            for a, b in zip(reference.predict_masks(images), exported.predict_masks(images), strict=True):
                pixels += a.size
                differing += int(np.count_nonzero(a != b))
    except Exception as exc:  # a corrupt file fails in ONNX Runtime's own ways
        raise GateError(
            f"the candidate's {ONNX_FILE} cannot be loaded or run ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); it is not registered and production is "
            "unchanged"
        ) from None
    return Parity(pixels, differing)


def check_onnx_parity(model_folder: Path, pairs: Sequence[Pair], min_agreement: float) -> Parity:
    """`onnx_parity`, raising GateError with the measured agreement when it is below `min_agreement`."""
    parity = onnx_parity(model_folder, pairs)
    if parity.agreement < min_agreement:
        raise GateError(
            f"the candidate's {ONNX_FILE} disagrees with its torch weights: masks agree on "
            f"{parity.agreement:.4%} of {parity.pixels} test pixels, below the {min_agreement:.1%} "
            "required (gate.onnx_min_agreement); it is not registered and production is unchanged; "
            "export the model again, and report it if it persists"
        )
    return parity
