"""Crops of a photo around the counter window, and stage 2 run on them (benchmarks/crop_refine.py).

The geometry is wms.crops': a crop is one affine map, a square of the 512 px photo centred
on a box (level, or along the found region's long axis so that the window lies flat),
turned and mirrored as asked, resized to `size` px. Training cuts batches of crops with
`affine_grid` and `grid_sample` from `Crop.theta`; prediction cuts one crop and puts stage
2's probabilities back with SciPy (`Crop.cut`, `Crop.paste`), as a torch-free server would.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from wms.crops import Box, Crop, largest_region, locate

if TYPE_CHECKING:
    import torch

SIDE = 512  # the prepared photos' side


def load(pairs: list) -> tuple[np.ndarray, np.ndarray]:
    """The pairs' photos (N, 3, 512, 512) and 0/1 masks (N, 1, 512, 512), uint8, read as training does."""
    from wms.train.preprocess import mask_to_array, open_image, open_mask

    images = np.stack([np.asarray(open_image(p.image), dtype=np.uint8).transpose(2, 0, 1) for p in pairs])
    masks = np.stack([mask_to_array(open_mask(p.mask))[None] for p in pairs])
    return images, masks


def region_boxes(
    mask: np.ndarray, keep: int, least: float, align: bool = False, elongated: float = 1.0
) -> list[Box]:
    """Boxes (`locate`) of a mask's `keep` largest regions, largest first; a side is at least `least` px."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return []
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    boxes = []
    for i in np.argsort(sizes)[::-1][:keep]:
        found = locate(labels == 1 + int(i), align, elongated)
        assert found is not None  # a label's region is never empty
        boxes.append(replace(found, side=max(found.side, least)))
    return boxes


def thetas(boxes: np.ndarray, angle: np.ndarray, flip: np.ndarray) -> torch.Tensor:
    """`affine_grid`'s matrices of crops (wms.crops.Crop) of `boxes` (cx, cy, crop side) of a photo."""
    import torch

    maps = [
        Crop(Box(cx, cy, side, a), 1.0, 1, bool(f)).theta(SIDE, SIDE)
        for (cx, cy, side), a, f in zip(boxes, angle, flip, strict=True)
    ]
    return torch.tensor(np.stack(maps), dtype=torch.float32)


def crop(
    images: torch.Tensor, masks: torch.Tensor | None, theta: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    import torch.nn.functional as F

    grid = F.affine_grid(theta, [len(theta), 3, size, size], align_corners=False)
    x = F.grid_sample(images.float() / 255, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = None
    if masks is not None:
        y = (F.grid_sample(masks.float(), grid, mode="bilinear", align_corners=False) > 0.5).float()
    return x, y


def stage1_probabilities(stage1: Any, photos: np.ndarray) -> list[np.ndarray]:
    """Stage 1's probability map of each photo (3, 512, 512), as it decoded, not read again."""
    from PIL import Image

    return [stage1.probability_maps([Image.fromarray(x.transpose(1, 2, 0))])[0] for x in photos]


class Refiner:
    """Stage 2 on crops of a photo: `margin` times a box's side, resized to `size` px; turned
    with the found region's long axis when `align`."""

    def __init__(
        self,
        model: torch.nn.Module,
        margin: float,
        size: int,
        threshold: float,
        align: bool = False,
        elongated: float = 1.0,
    ) -> None:
        self.model, self.margin, self.size, self.threshold = model, margin, size, threshold
        self.align, self.elongated = align, elongated

    def locate(self, mask: np.ndarray) -> Box | None:
        return locate(mask, self.align, self.elongated)

    def probabilities(self, image: np.ndarray, found: Box) -> np.ndarray:
        """Stage 2's probabilities on one photo (3, 512, 512) from the crop around `found`, cut
        and put back with SciPy (wms.crops), as ONNX serving would."""
        import torch

        crop = Crop(found, self.margin, self.size)
        x = torch.from_numpy(crop.cut(image.transpose(1, 2, 0)).transpose(2, 0, 1)[None] / 255)
        logits = (self.model(x) + self.model(x.flip(-1)).flip(-1)) / 2  # flip TTA, as stage 1 has
        return crop.paste(torch.sigmoid(logits)[0, 0].numpy(), SIDE, SIDE)

    def answer(self, image: np.ndarray, found: Box | None, fallback: np.ndarray) -> tuple[np.ndarray, float]:
        """Stage 2's mask from the crop around `found` and its probability mass (the sum of
        its probabilities above the threshold); `fallback` and 0 where there is no box."""
        if found is None:
            return fallback, 0.0
        prob = self.probabilities(image, found)
        mask = prob > self.threshold
        return mask, float(prob[mask].sum())

    def mask(self, image: np.ndarray, found: Box | None, fallback: np.ndarray) -> np.ndarray:
        """Stage 2's mask from the crop around `found`; `fallback` where there is no box."""
        return self.answer(image, found, fallback)[0]

    def both(self, image: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage 2's masks from the crop around the largest region of stage 1's mask `first`,
        from the crop around all its regions, and the heavier of the two (more probability mass)."""
        largest, largest_mass = self.answer(image, self.locate(largest_region(first)), first)
        wide, wide_mass = self.answer(image, self.locate(first), first)
        return largest, wide, largest if largest_mass > wide_mass else wide

    def heavier(self, image: np.ndarray, prob: np.ndarray) -> np.ndarray:
        """Stage 2's mask from the heavier of the two crops (`both`)."""
        return self.both(image, prob > self.threshold)[2]
