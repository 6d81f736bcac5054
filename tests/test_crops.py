"""Crops around the window: SciPy's pixels are torch's, a box finds a turned window, no torch needed."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from wms.crops import Box, Crop, largest_region, locate, principal_box

torch = pytest.importorskip("torch")
F = torch.nn.functional

CROPS = [
    Crop(Box(30.0, 20.0, 12.0), margin=1.4, size=16),
    Crop(Box(26.5, 17.25, 20.0, np.radians(35)), margin=1.5, size=24),
    Crop(Box(4.0, 33.0, 18.0, np.radians(-80)), margin=1.4, size=20, mirror=True),  # half outside
    Crop(Box(50.0, 5.0, 40.0, np.radians(90)), margin=2.0, size=32),
]


@pytest.fixture
def photo() -> np.ndarray:
    """A non-square photo (H 37, W 53, 3 channels), so rows and columns cannot be swapped unseen."""
    return np.random.default_rng(0).uniform(0, 255, (37, 53, 3)).astype(np.float32)


def torch_cut(image: np.ndarray, crop: Crop) -> np.ndarray:
    """What training does: affine_grid + grid_sample, bilinear, zeros padding."""
    theta = torch.tensor(crop.theta(*image.shape[:2])[None], dtype=torch.float32)
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].copy())
    grid = F.affine_grid(theta, [1, 3, crop.size, crop.size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0].numpy().transpose(1, 2, 0)


def torch_paste(prob: np.ndarray, crop: Crop, height: int, width: int) -> np.ndarray:
    forward = np.vstack([crop.theta(height, width), [0.0, 0.0, 1.0]])
    inverse = torch.tensor(np.linalg.inv(forward)[None, :2], dtype=torch.float32)
    grid = F.affine_grid(inverse, [1, 1, height, width], align_corners=False)
    back = F.grid_sample(
        torch.from_numpy(prob[None, None].copy()), grid, mode="bilinear", align_corners=False
    )
    return back[0, 0].numpy()


@pytest.mark.parametrize("crop", CROPS, ids=["level", "turned", "mirrored, half outside", "upright"])
def test_a_crop_cut_with_scipy_holds_the_pixels_torch_cuts(photo: np.ndarray, crop: Crop) -> None:
    ours = crop.cut(photo)
    assert ours.shape == (crop.size, crop.size, 3)
    np.testing.assert_allclose(ours, torch_cut(photo, crop), atol=1e-3)


@pytest.mark.parametrize("crop", CROPS, ids=["level", "turned", "mirrored, half outside", "upright"])
def test_a_crops_answer_goes_back_where_torch_puts_it(crop: Crop) -> None:
    prob = np.random.default_rng(1).uniform(0, 1, (crop.size, crop.size)).astype(np.float32)
    ours = crop.paste(prob, 37, 53)
    assert ours.shape == (37, 53)
    np.testing.assert_allclose(ours, torch_paste(prob, crop, 37, 53), atol=1e-5)


@pytest.mark.parametrize("crop", CROPS, ids=["level", "turned", "mirrored, half outside", "upright"])
def test_a_small_crop_on_a_large_photo_is_pasted_as_the_whole_photo_would_be(crop: Crop) -> None:
    """Paste samples only the crop's footprint: on a photo 6x larger than the crop, nothing is
    lost at the footprint's edge (torch samples every photo pixel; its float32 grid is a little
    coarser on a larger photo, hence 1e-4)."""
    prob = np.random.default_rng(2).uniform(0.5, 1, (crop.size, crop.size)).astype(np.float32)
    height, width = 37 * 6, 53 * 6
    rows, cols = crop.footprint(height, width)
    assert (rows.stop - rows.start) * (cols.stop - cols.start) < height * width / 4
    ours, theirs = crop.paste(prob, height, width), torch_paste(prob, crop, height, width)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_a_crop_at_one_photo_pixel_per_crop_pixel_is_a_copy_and_goes_back_unchanged(
    photo: np.ndarray,
) -> None:
    crop = Crop(Box(25.0, 18.0, 10.0), margin=1.0, size=10)  # columns 20-29, rows 13-22
    np.testing.assert_allclose(crop.cut(photo), photo[13:23, 20:30], atol=1e-3)
    back = crop.paste(np.ones((10, 10), np.float32), 37, 53)
    assert back[13:23, 20:30].min() == pytest.approx(1.0)
    assert back.sum() == pytest.approx(100.0)  # nothing outside the crop


def turned_bar(angle_degrees: float, length: int = 40, width: int = 8) -> np.ndarray:
    """A mask of a length x width bar centred at (x 48, y 40), turned by the angle."""
    ys, xs = np.mgrid[0:80, 0:96] + 0.5
    a = np.radians(angle_degrees)
    along = (xs - 48) * np.cos(a) + (ys - 40) * np.sin(a)
    across = -(xs - 48) * np.sin(a) + (ys - 40) * np.cos(a)
    return (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)


@pytest.mark.parametrize("angle", [0, 30, 75, -45])
def test_the_principal_box_lies_along_a_turned_window(angle: float) -> None:
    found = principal_box(turned_bar(angle))
    assert found is not None
    box, width = found
    assert (box.cx, box.cy) == pytest.approx((48, 40), abs=1.0)
    assert np.degrees(box.angle) == pytest.approx(angle, abs=2)
    assert box.side == pytest.approx(40, abs=2.5)
    assert width == pytest.approx(8, abs=2.5)


def test_a_crop_along_the_principal_box_shows_the_window_level() -> None:
    mask = turned_bar(60).astype(np.float32)[..., None]
    box = locate(mask[..., 0] > 0, align=True)
    assert box is not None
    level = Crop(box, margin=1.2, size=48).cut(mask)[..., 0] > 0.5
    rows, cols = np.nonzero(level)
    assert np.ptp(cols) > 3 * np.ptp(rows)  # lying flat: much wider than tall


def test_locate_boxes_a_fragment_by_its_bounds_and_empty_as_nothing() -> None:
    square = np.zeros((20, 20), dtype=bool)
    square[5:9, 10:14] = True
    assert locate(square, align=True, elongated=2.0) == Box(12.0, 7.0, 4.0, 0.0)  # too square to turn
    assert locate(np.zeros((20, 20), dtype=bool), align=True) is None


def test_the_largest_region_is_kept() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[0:2, 0:2] = True
    mask[5:9, 5:9] = True
    assert largest_region(mask).sum() == 16


def test_it_needs_no_torch() -> None:
    code = "import sys, wms.crops; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        == "False\n"
    )
