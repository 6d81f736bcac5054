"""Crops of a photo around the counter window, and a crop's answer put back onto the photo.

A second network that refines a first one's mask sees the photo through a crop: a square
around the window the first one found, a margin wider than the window, turned so that the
window lies level, resized to the second network's input side. `Crop` is that one affine
map, from the crop's pixels to the photo's; `cut` samples the photo through it and `paste`
brings the crop's probabilities back, zeros outside the crop. Both are bilinear with zeros
beyond the edge, as `torch.nn.functional.grid_sample` is (align_corners=False, zeros
padding); `Crop.theta` is the same map in the normalised form `affine_grid` takes, so that
training can cut batches of crops on the GPU and prediction, here with SciPy, cuts the same
pixels (tests/test_crops.py holds them to it).

Where to cut: `locate` boxes a mask, along the principal axis of its pixels when asked
(`principal_box`) or by its bounding box. A photo's coordinates here are continuous: pixel
(row r, column c) covers [c, c + 1) x [r, r + 1), so its centre is (c + 0.5, r + 0.5).

NumPy and SciPy only: serving runs this beside ONNX Runtime, without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """Where to cut: the window's centre (x right, y down; continuous pixels), its length
    along `angle` (radians from the x axis, turning towards y) and that angle."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0


def largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask (the mask itself when it has one or none)."""
    from scipy import ndimage  # imported where used: at the top it would slow every `wms` command

    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    return np.asarray(labels == 1 + int(np.argmax(sizes)))


def bounding_box(mask: np.ndarray) -> Box | None:
    """The mask's bounding box, level (angle 0), its longer side as the side; None when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return Box((x0 + x1) / 2, (y0 + y1) / 2, float(max(x1 - x0, y1 - y0)))


def principal_box(mask: np.ndarray) -> tuple[Box, float] | None:
    """The box along the principal axis of the mask's pixels (the axis of their largest
    variance) and the mask's width across it; None when empty. The angle is a line's, within
    [-90, 90) degrees: an axis has no direction."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    points = np.stack([xs, ys], axis=1).astype(np.float64) + 0.5  # pixel centres
    mean = points.mean(axis=0)
    if len(xs) < 3:
        return Box(float(mean[0]), float(mean[1]), 1.0), 1.0
    _, vectors = np.linalg.eigh(np.cov((points - mean).T))
    axis = vectors[:, -1]
    normal = np.array([-axis[1], axis[0]])
    along, across = (points - mean) @ axis, (points - mean) @ normal
    centre = mean + (along.max() + along.min()) / 2 * axis + (across.max() + across.min()) / 2 * normal
    angle = float(np.arctan2(axis[1], axis[0]))
    angle = (angle + np.pi / 2) % np.pi - np.pi / 2
    length, width = along.max() - along.min() + 1, across.max() - across.min() + 1
    return Box(float(centre[0]), float(centre[1]), float(length), angle), float(width)


def locate(mask: np.ndarray, align: bool = False, elongated: float = 1.0) -> Box | None:
    """The box a crop is centred on: along the mask's long axis when `align` and the mask is
    at least `elongated` times longer than wide (a fragment's axis says little), else its
    bounding box; None when the mask is empty."""
    if align:
        found = principal_box(mask)
        if found is None:
            return None
        box, width = found
        if box.side >= elongated * width:
            return box
    return bounding_box(mask)


@dataclass(frozen=True)
class Crop:
    """A square of `box.side * margin` photo pixels around `box`, turned by its angle (and
    mirrored left-right when `mirror`), seen as `size` x `size` pixels."""

    box: Box
    margin: float
    size: int
    mirror: bool = False

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(A, b): a crop pixel's index (row, column) maps to the photo's as A @ (row, col) + b."""
        scale = self.box.side * self.margin / self.size  # photo pixels per crop pixel
        cos, sin = np.cos(self.box.angle), np.sin(self.box.angle)
        m = -1.0 if self.mirror else 1.0
        # Crop pixel centre offsets (p across, q down) from the crop's centre, in crop pixels,
        # go to the photo as x = cx + scale (cos m p - sin q), y = cy + scale (sin m p + cos q).
        a = scale * np.array([[cos, sin * m], [-sin, cos * m]])  # rows: (y, x); columns: (q, p)
        c = 0.5 - self.size / 2  # index 0's offset from the centre, plus the half pixel
        b = np.array([self.box.cy, self.box.cx]) - 0.5 + a @ np.array([c, c])
        return a, b

    def theta(self, height: int, width: int) -> np.ndarray:
        """The same map as `affine_grid` takes it (2 x 3, normalised x, y in [-1, 1])."""
        scale = self.box.side * self.margin
        cos, sin = np.cos(self.box.angle), np.sin(self.box.angle)
        m = -1.0 if self.mirror else 1.0
        return np.array(
            [
                [scale / width * cos * m, -scale / width * sin, self.box.cx / width * 2 - 1],
                [scale / height * sin * m, scale / height * cos, self.box.cy / height * 2 - 1],
            ]
        )

    def cut(self, image: np.ndarray) -> np.ndarray:
        """The crop (size, size, C) of a photo (H, W, C), float32; zeros beyond its edge."""
        from scipy import ndimage

        a, b = self.matrix()
        pixels = np.moveaxis(image.astype(np.float32, copy=False), -1, 0)
        return np.stack(
            [
                ndimage.affine_transform(
                    np.ascontiguousarray(channel), a, b, (self.size, self.size), order=1, mode="grid-constant"
                )
                for channel in pixels
            ],
            axis=-1,
        )

    def footprint(self, height: int, width: int) -> tuple[slice, slice]:
        """The rows and columns of a photo of this size that a pasted crop can touch: those
        whose crop index lies strictly between -1 and `size` (bilinear with zeros beyond the
        edge reaches one crop pixel past it), with a pixel to spare each side."""
        a, b = self.matrix()
        ends = (-1.0, self.size)
        corners = np.array([a @ np.array([r, c]) + b for r in ends for c in ends])
        low = np.floor(corners.min(axis=0)).astype(int)
        high = np.ceil(corners.max(axis=0)).astype(int) + 1
        return (
            slice(int(np.clip(low[0], 0, height)), int(np.clip(high[0], 0, height))),
            slice(int(np.clip(low[1], 0, width)), int(np.clip(high[1], 0, width))),
        )

    def paste(self, crop: np.ndarray, height: int, width: int) -> np.ndarray:
        """A crop's map (size, size) put back onto a photo of this size; zeros outside the crop.

        Only the crop's footprint is sampled (a window's crop covers a fraction of the photo;
        the rest would be zeros anyway): the same values, a fraction of the work."""
        from scipy import ndimage

        a, b = self.matrix()
        inverse = np.linalg.inv(a)
        rows, cols = self.footprint(height, width)
        out = np.zeros((height, width), np.float32)
        if rows.start == rows.stop or cols.start == cols.stop:
            return out
        out[rows, cols] = ndimage.affine_transform(
            crop.astype(np.float32, copy=False),
            inverse,
            inverse @ (np.array([rows.start, cols.start]) - b),
            (rows.stop - rows.start, cols.stop - cols.start),
            order=1,
            mode="grid-constant",
        )
        return out
