"""Masks as Label Studio polygons and back: the outline is the mask's, to the pixel where it is small."""

from __future__ import annotations

import numpy as np

from wms.data.synth import synth_pair
from wms.labelstudio import mask_to_polygons, polygons_to_mask, prediction, result_mask


def test_regions_touching_at_a_corner_and_single_pixels_come_back_exactly() -> None:
    mask = np.zeros((9, 9), dtype=bool)
    mask[1:3, 1:3] = mask[3:5, 3:5] = True  # two squares touching at one corner
    mask[6, 6] = mask[7, 7] = True  # two pixels touching at one corner
    polygons = mask_to_polygons(mask, min_area=1)
    assert len(polygons) == 4
    assert (polygons_to_mask(polygons, 9, 9) == mask).all()


def test_a_large_window_comes_back_with_few_points_and_holes_are_not_drawn() -> None:
    mask = np.asarray(synth_pair(seed=3, index=0, size=512)[1]) > 127
    (polygon,) = mask_to_polygons(mask)
    back = polygons_to_mask([polygon], *mask.shape)
    assert (back & mask).sum() / (back | mask).sum() >= 0.97
    assert len(polygon) < 100
    ring = np.zeros((20, 20), dtype=bool)
    ring[2:18, 2:18] = True
    ring[8:12, 8:12] = False
    assert polygons_to_mask(mask_to_polygons(ring), 20, 20).sum() == 16 * 16


def test_points_are_percentages_of_the_image_size() -> None:
    mask = np.zeros((50, 200), dtype=bool)
    mask[10:20, 100:150] = True
    (result,) = prediction(mask, "7", 0.25)["result"]
    assert (result["original_width"], result["original_height"]) == (200, 50)
    assert sorted(map(tuple, result["value"]["points"])) == [(50, 20), (50, 40), (75, 20), (75, 40)]
    assert (result_mask([result]) == mask).all()
