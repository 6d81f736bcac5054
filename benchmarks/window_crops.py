"""Crops of a photo around the counter window, and stage 2 run on them (benchmarks/crop_refine.py).

A crop is one affine map (`torch.nn.functional.affine_grid` and `grid_sample`): a square of
the 512 px photo, centred on a box, turned and mirrored as asked, resized to `size` px; its
inverse puts stage 2's probabilities back onto the photo, zeros outside the crop. A box is
(centre x, centre y, side, angle): axis-aligned (angle 0, the longer side of the bounding
box), or aligned with the region's long axis (`principal_box`), so that the crop shows the
window lying flat however the photo holds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage
from tail_variants import largest_region

if TYPE_CHECKING:
    import torch

SIDE = 512  # the prepared photos' side


def load(pairs: list) -> tuple[np.ndarray, np.ndarray]:
    """The pairs' photos (N, 3, 512, 512) and 0/1 masks (N, 1, 512, 512), uint8, read as training does."""
    from wms.train.preprocess import mask_to_array, open_image, open_mask

    images = np.stack([np.asarray(open_image(p.image), dtype=np.uint8).transpose(2, 0, 1) for p in pairs])
    masks = np.stack([mask_to_array(open_mask(p.mask))[None] for p in pairs])
    return images, masks


def box(mask: np.ndarray) -> tuple[float, float, float] | None:
    """Centre x, centre y and longer side (pixels) of a mask's bounding box; None when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return (x0 + x1) / 2, (y0 + y1) / 2, float(max(x1 - x0, y1 - y0))


def principal_box(mask: np.ndarray) -> tuple[float, float, float, float, float] | None:
    """Centre, length along its long axis, width across it (pixels) and that axis's angle
    (radians, image coordinates: y down) of a mask's pixels, from their principal axis; None
    when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    mean = points.mean(axis=0)
    if len(xs) < 3:
        return float(mean[0]), float(mean[1]), 1.0, 1.0, 0.0
    _, vectors = np.linalg.eigh(np.cov((points - mean).T))
    axis = vectors[:, -1]  # the eigenvector of the largest variance
    normal = np.array([-axis[1], axis[0]])
    along, across = (points - mean) @ axis, (points - mean) @ normal
    centre = mean + (along.max() + along.min()) / 2 * axis + (across.max() + across.min()) / 2 * normal
    angle = float(np.arctan2(axis[1], axis[0]))
    angle = (angle + np.pi / 2) % np.pi - np.pi / 2  # a line's angle: within [-90, 90) degrees
    length, width = along.max() - along.min() + 1, across.max() - across.min() + 1
    return float(centre[0]), float(centre[1]), float(length), float(width), angle


def locate(mask: np.ndarray, align: bool, elongated: float = 1.0) -> tuple[float, float, float, float] | None:
    """The box a crop is centred on: along the mask's long axis when `align` and the mask is at
    least `elongated` times longer than wide (a fragment's axis says little), else the
    bounding box at angle 0."""
    if align:
        found = principal_box(mask)
        if found is None or found[2] >= elongated * found[3]:
            return None if found is None else (found[0], found[1], found[2], found[4])
    bounds = box(mask)
    return None if bounds is None else (*bounds, 0.0)


def region_boxes(
    mask: np.ndarray, keep: int, least: float, align: bool = False, elongated: float = 1.0
) -> list[tuple[float, float, float, float]]:
    """Boxes (`locate`) of a mask's `keep` largest regions, largest first; a side is at least `least` px."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return []
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    boxes = []
    for i in np.argsort(sizes)[::-1][:keep]:
        found = locate(labels == 1 + int(i), align, elongated)
        assert found is not None  # a label's region is never empty
        boxes.append((found[0], found[1], max(found[2], least), found[3]))
    return boxes


def thetas(boxes: np.ndarray, angle: np.ndarray, flip: np.ndarray) -> torch.Tensor:
    """Affine grids' matrices: crop (u, v) in [-1, 1] to photo coordinates, turned and mirrored."""
    import torch

    cx, cy, side = boxes[:, 0], boxes[:, 1], boxes[:, 2]
    a = side / SIDE  # half the crop's side in normalised units (the photo spans 2)
    cos, sin = np.cos(angle), np.sin(angle)
    m = np.where(flip, -1.0, 1.0)
    rows = [
        [a * cos * m, -a * sin, cx / SIDE * 2 - 1],
        [a * sin * m, a * cos, cy / SIDE * 2 - 1],
    ]
    return torch.tensor(np.stack([np.stack(r, axis=-1) for r in rows], axis=1), dtype=torch.float32)


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

    def locate(self, mask: np.ndarray) -> tuple[float, float, float, float] | None:
        return locate(mask, self.align, self.elongated)

    def probabilities(self, image: np.ndarray, found: tuple[float, float, float, float]) -> np.ndarray:
        """Stage 2's probabilities on one photo (3, 512, 512) from the crop around `found`:
        (cx, cy, side, angle), as `locate` gives it."""
        import torch
        import torch.nn.functional as F

        cx, cy, side, angle = found
        crop_box = np.array([[cx, cy, side * self.margin]])
        theta = thetas(crop_box, np.array([angle]), np.zeros(1, dtype=bool))
        x, _ = crop(torch.from_numpy(image[None]), None, theta, self.size)
        logits = (self.model(x) + self.model(x.flip(-1)).flip(-1)) / 2  # flip TTA, as stage 1 has
        # Back onto the photo: the inverse of the crop's affine map, zeros outside the crop.
        forward = np.vstack([theta[0].double().numpy(), [0.0, 0.0, 1.0]])
        inverse = torch.tensor(np.linalg.inv(forward)[None, :2], dtype=torch.float32)
        grid = F.affine_grid(inverse, [1, 1, SIDE, SIDE], align_corners=False)
        back = F.grid_sample(torch.sigmoid(logits), grid, mode="bilinear", align_corners=False)
        return np.asarray(back[0, 0].numpy())

    def answer(
        self, image: np.ndarray, found: tuple[float, float, float, float] | None, fallback: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """Stage 2's mask from the crop around `found` and its probability mass (the sum of
        its probabilities above the threshold); `fallback` and 0 where there is no box."""
        if found is None:
            return fallback, 0.0
        prob = self.probabilities(image, found)
        mask = prob > self.threshold
        return mask, float(prob[mask].sum())

    def mask(
        self, image: np.ndarray, found: tuple[float, float, float, float] | None, fallback: np.ndarray
    ) -> np.ndarray:
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
