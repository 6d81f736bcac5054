"""Per-image scores of a segmenter on labelled pairs, torch-free.

Scoring is at each mask's own resolution (not the model's input size), which keeps models
trained at different sizes comparable on the same images. `evaluate` takes anything with
`predict_masks` (the torch `Segmenter` or the ONNX Runtime `OnnxSegmenter`); `evaluate_onnx`
scores a saved model folder through its export, as the service would run it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from wms.data.pairs import Pair
from wms.train.metrics import dice, iou
from wms.train.preprocess import mask_to_array, open_image, open_mask


@dataclass(frozen=True)
class ImageScore:
    """Scores of one image."""

    id: str
    dice: float
    iou: float


class MaskPredictor(Protocol):
    """Turns PIL images into boolean masks, each at its own image's size."""

    def predict_masks(self, images: list[Image.Image]) -> list[np.ndarray]: ...


def _predicted(
    segmenter: MaskPredictor, pairs: Sequence[Pair], batch_size: int
) -> Iterator[list[tuple[Pair, np.ndarray]]]:
    """The pairs with their predicted masks, one batch at a time."""
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        yield list(zip(chunk, segmenter.predict_masks([open_image(p.image) for p in chunk]), strict=True))


def evaluate(
    segmenter: MaskPredictor,
    pairs: Sequence[Pair],
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[ImageScore]:
    """Dice and IoU per pair, in the order given."""
    scores = []
    for chunk in _predicted(segmenter, pairs, batch_size):
        for pair, pred in chunk:
            true = mask_to_array(open_mask(pair.mask))
            scores.append(ImageScore(pair.id, dice(pred, true), iou(pred, true)))
        if progress:
            progress(len(chunk))
    return scores


def predict(segmenter: MaskPredictor, pairs: Sequence[Pair], batch_size: int = 8) -> list[np.ndarray]:
    """The predicted mask of each pair's image, in the order given, each at its image's size."""
    return [pred for chunk in _predicted(segmenter, pairs, batch_size) for _, pred in chunk]


def evaluate_onnx(model_folder: Path, pairs: Sequence[Pair], batch_size: int = 8) -> list[ImageScore]:
    """Dice and IoU per pair of the folder's `model.onnx` on ONNX Runtime (CPU), as served."""
    from wms.train.export import OnnxSegmenter

    return evaluate(OnnxSegmenter.load(model_folder), pairs, batch_size)


def summarize(scores: Sequence[ImageScore]) -> dict[str, float]:
    """Mean Dice and IoU over images."""
    if not scores:
        return {"dice": float("nan"), "iou": float("nan"), "n": 0}
    return {
        "dice": float(np.mean([s.dice for s in scores])),
        "iou": float(np.mean([s.iou for s in scores])),
        "n": len(scores),
    }
