"""Crop and refine (wms.refine): which crop the second stage answers on, and when stage 1 stands."""

from __future__ import annotations

import numpy as np

from wms.refine import crops_for, refine
from wms.train.spec import RefineSpec

SPEC = RefineSpec(size=48, margin=1.5, align=False)


def photo_with_window() -> np.ndarray:
    """A dark 96 x 128 photo whose only bright thing is the window: rows 56-71, columns 80-119."""
    image = np.zeros((96, 128, 3), dtype=np.uint8)
    image[56:72, 80:120] = 255
    return image


def bright_pixels(crops: np.ndarray) -> np.ndarray:
    """A stand-in second stage that finds bright pixels: (N, 3, S, S) in [0, 1] -> (N, S, S)."""
    return (crops.mean(axis=1) > 0.5).astype(np.float32) * 0.9


def test_a_look_alike_larger_than_the_window_does_not_win() -> None:
    image = photo_with_window()
    prob = np.zeros((96, 128), dtype=np.float32)
    prob[10:40, 10:50] = 0.8  # stage 1's largest region: a look-alike on dark wall
    prob[60:66, 95:105] = 0.7  # and a fragment of the window
    refined = refine(image, prob, 0.5, SPEC, bright_pixels) > 0.5
    window = photo_with_window()[..., 0] > 0
    assert not refined[10:40, 10:50].any()  # the look-alike's crop found nothing: the other crop won
    assert (refined & window).sum() > 0.8 * window.sum()  # the whole window, not stage 1's fragment
    assert (refined & ~window).sum() < 0.2 * window.sum()


def test_where_stage_1_finds_nothing_its_map_stands() -> None:
    prob = np.full((96, 128), 0.2, dtype=np.float32)
    assert refine(photo_with_window(), prob, 0.5, SPEC, bright_pixels) is prob


def test_where_stage_2_finds_nothing_in_either_crop_stage_1s_map_stands() -> None:
    prob = np.zeros((96, 128), dtype=np.float32)
    prob[10:40, 10:50] = 0.8
    dark = np.zeros((96, 128, 3), dtype=np.uint8)
    assert refine(dark, prob, 0.5, SPEC, bright_pixels) is prob


def test_one_region_is_one_crop_two_regions_are_two() -> None:
    one = np.zeros((96, 128), dtype=bool)
    one[10:20, 10:40] = True
    assert len(crops_for(one, SPEC)) == 1
    two = one.copy()
    two[70:75, 100:110] = True
    largest, both = crops_for(two, SPEC)
    assert largest.box.side == 30 and both.box.side > 90
