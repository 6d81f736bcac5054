"""How sure the model is of one photo, from its foreground probability map alone (numpy only).

    from wms.uncertainty import assess
    a = assess(prob, threshold=0.5)     # prob: (H, W) float map at the photo's size
    a.score, a.verdict, a.to_dict()

The service, `wms predict` and `wms data suggest` rank photos by `score`, from 0 (sure) to 1
(unsure). Three things make a photo unsure, and the score is the worst of them:

- no window: not one pixel above the threshold              -> score 1
- rivals:    a second region of the mask as large as the first -> its area / the largest's area
- blur:      a fuzzy window                                    -> `uncertain_share`

`uncertain_share` is the share of the pixels the model gives any weight to (probability over
UNSURE_LOW) that it is not sure about (probability between UNSURE_LOW and UNSURE_HIGH). A crisp
window has such pixels only in a thin band along its edge; a blurry one is mostly made of them.
Comparing areas keeps the share independent of the photo's resolution. `entropy` is reported
beside it (not part of the score): the mean binary entropy, in bits, over those same pixels,
the window and its edge, so the background of a large photo does not dilute it.

A map over MAX_PIXELS is assessed on every k-th row and column, the smallest k that brings it
under: it is a bilinear upsampling of the model's output (at most 512x512), so a 12-megapixel
map holds no detail a 1-megapixel one lacks, and the full one costs seconds. Shares and entropy
barely move; a speck thinner than k pixels may go uncounted in `regions`.

The verdict is "check this one" from a score of CHECK_FROM up, else "sure". CHECK_FROM was set
on real meter photos (benchmarks/uncertainty.py, benchmarks/results/uncertainty.json): on the
241 val and test photos of a model trained 12 minutes with the `cpu` recipe (mean Dice 0.74),
it flags 30% of the photos, every mask with Dice below 0.5 (31 of 31) and none with Dice 0.9 or
more (0 of 63); the score separates the misses from the rest with a ROC AUC of 0.98.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

UNSURE_LOW, UNSURE_HIGH = 0.1, 0.9  # a pixel between these is one the model is unsure of
CHECK_FROM = 0.5  # a score from here up reads "check this one"
MAX_PIXELS = 1_000_000  # larger maps are strided down to this (see above)
SURE, CHECK = "sure", "check this one"
VERDICTS = (SURE, CHECK)
_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Assessment:
    """How sure one prediction is; `score` ranks photos (0 sure ... 1 unsure)."""

    score: float
    entropy: float  # mean binary entropy (bits) of the pixels with probability over UNSURE_LOW
    uncertain_share: float  # of those pixels, the share below UNSURE_HIGH
    regions: int  # connected regions of the mask (8-connectivity)
    verdict: str  # SURE or CHECK

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, floats rounded to 4 digits."""
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of a yes/no outcome with probability `p` (0 at 0 and 1, 1 at 0.5)."""
    p = np.clip(p.astype(np.float32), 1e-7, 1 - 1e-7)  # float32: a million pixels in milliseconds
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def assess(prob: np.ndarray, threshold: float) -> Assessment:
    """The uncertainty of the mask `prob > threshold`, from the (H, W) probability map `prob`."""
    from scipy import ndimage  # imported where used: at the top it would slow every `wms` command

    if prob.ndim != 2:
        raise ValueError(f"expected an (H, W) probability map, got shape {prob.shape}")
    step = math.ceil(math.sqrt(prob.size / MAX_PIXELS))
    if step > 1:
        prob = np.ascontiguousarray(prob[::step, ::step])
    mask = prob > threshold
    labels, regions = ndimage.label(mask, structure=_EIGHT_NEIGHBOURS)
    weighed = prob > UNSURE_LOW
    considered = prob[weighed]
    uncertain_share = float((considered < UNSURE_HIGH).mean()) if considered.size else 0.0
    entropy = float(binary_entropy(considered).mean()) if considered.size else 0.0
    if regions == 0:
        score = 1.0
    else:
        rival = 0.0
        if regions > 1:
            areas = np.sort(np.bincount(labels[mask])[1:])
            rival = float(areas[-2] / areas[-1])
        score = max(rival, uncertain_share)
    return Assessment(
        score=score,
        entropy=entropy,
        uncertain_share=uncertain_share,
        regions=int(regions),
        verdict=CHECK if score >= CHECK_FROM else SURE,
    )
