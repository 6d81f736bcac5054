"""Per-image evaluation of a segmenter on labelled pairs, at each mask's own resolution.

Scoring at the mask's resolution (not the model's input size) keeps models trained at
different sizes comparable on the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from wms.data.pairs import Pair
from wms.train.metrics import dice, iou
from wms.train.preprocess import mask_to_array, open_image, open_mask
from wms.train.segmenter import Segmenter


@dataclass(frozen=True)
class ImageScore:
    """Scores of one image."""

    id: str
    dice: float
    iou: float


def evaluate(
    segmenter: Segmenter,
    pairs: Sequence[Pair],
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[ImageScore]:
    """Dice and IoU per pair, in the order given."""
    scores = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        predicted = segmenter.predict_masks([open_image(p.image) for p in chunk])
        for pair, pred in zip(chunk, predicted, strict=True):
            true = mask_to_array(open_mask(pair.mask))
            scores.append(ImageScore(pair.id, dice(pred, true), iou(pred, true)))
        if progress:
            progress(len(chunk))
    return scores


def summarize(scores: Sequence[ImageScore]) -> dict[str, float]:
    """Mean Dice and IoU over images."""
    if not scores:
        return {"dice": float("nan"), "iou": float("nan"), "n": 0}
    return {
        "dice": float(np.mean([s.dice for s in scores])),
        "iou": float(np.mean([s.iou for s in scores])),
        "n": len(scores),
    }
