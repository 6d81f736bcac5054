"""Crop and refine: a second network segments the window again in a crop around what the first found.

The first network sees the whole photo shrunk to its input side, where a small or far
window is a few pixels. The second sees a crop around the region the first found, turned
so that the window lies level (wms.crops), at its own input side: the window fills it. On
the real photos this lifted test Dice from 0.87-0.89 (the first network alone) to
0.92-0.93 (benchmarks/crop_refine.py).

Which crop: the first network's mask may hold the window and a look-alike (the red lettering
of the meter, a strip of tiles). The second network is run on two crops, one around the
largest region and one around all regions, and the answer with more probability mass is
kept (`refine`). Its probabilities replace the first network's: zeros outside the crop.
Where the first network found nothing, or the second finds nothing in either crop, the
first network's map stands.

NumPy and SciPy only: `Segmenter` (torch) and `OnnxSegmenter` (ONNX Runtime) pass their own
second network as `stage2`, so both cut and paste the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from wms.crops import Crop, largest_region, locate
from wms.train.spec import RefineSpec

# The second network: crops (N, 3, S, S) float32 in [0, 1] -> probabilities (N, S, S).
Stage2 = Callable[[np.ndarray], np.ndarray]


def crops_for(mask: np.ndarray, spec: RefineSpec) -> list[Crop]:
    """The crops around the largest region and around all regions of `mask`: one when they
    are the same box, none when the mask is empty."""
    largest = largest_region(mask)
    crops: list[Crop] = []
    for region in (largest,) if largest is mask else (largest, mask):  # one region: one box to find
        box = locate(region, spec.align, spec.elongated)
        if box is not None and all(box != c.box for c in crops):
            crops.append(Crop(box, spec.margin, spec.size))
    return crops


def refine(
    image: np.ndarray, prob: np.ndarray, threshold: float, spec: RefineSpec, stage2: Stage2
) -> np.ndarray:
    """The refined probability map of a photo (H, W, 3) uint8 whose first-stage map is `prob` (H, W)."""
    crops = crops_for(prob > threshold, spec)
    if not crops:
        return prob
    answers = stage2(np.stack([c.cut(image).transpose(2, 0, 1) for c in crops]) / np.float32(255))
    height, width = prob.shape
    pasted = [c.paste(a, height, width) for c, a in zip(crops, answers, strict=True)]
    masses = [float(p[p > threshold].sum()) for p in pasted]
    if max(masses) == 0:
        return prob
    return pasted[int(np.argmax(masses))]


def refined_maps(
    images: Sequence[Image.Image],
    maps: list[np.ndarray],
    threshold: float,
    spec: RefineSpec | None,
    stage2: Stage2,
) -> list[np.ndarray]:
    """Each photo's first-stage map refined (`refine`); `maps` as they are without a second stage."""
    if spec is None:
        return maps
    return [
        refine(np.asarray(img.convert("RGB")), prob, threshold, spec, stage2)
        for img, prob in zip(images, maps, strict=True)
    ]
