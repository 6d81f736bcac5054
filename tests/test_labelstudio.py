"""Masks as Label Studio polygons and back: the outline is the mask's, to the pixel where it is small."""

from __future__ import annotations

import numpy as np
import pytest

from wms.data.synth import synth_pair
from wms.labelstudio import labelled_masks, mask_to_polygons, polygons_to_mask, prediction, result_mask


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


def _task(annotations: object) -> dict[str, object]:
    return {"data": {"image": "/data/local-files/?d=batch/images/meter-1.jpg"}, "annotations": annotations}


def _drawn(**changes: object) -> dict[str, object]:
    item = {"type": "polygonlabels", "original_width": 40, "original_height": 30}
    item["value"] = {"points": [[10, 10], [60, 10], [60, 50]], "polygonlabels": ["counter"]}
    return {"result": [item | changes]}


@pytest.mark.parametrize(
    ("task", "why"),
    [
        ("meter-1.jpg", "not a Label Studio task"),
        ({"data": "meter-1.jpg"}, "not a Label Studio task"),
        (_task("done"), "its annotations are not a list"),
        (_task([None]), "its annotations are not a list"),
        (_task([{"result": "counter"}]), "its annotation's result is not a list"),
        (_task([{"result": [None, 3]}]), "no counter window drawn"),
        (_task([_drawn(original_width="wide")]), "no usable polygon (invalid literal"),
        (_task([_drawn(original_width=10**9, original_height=10**9)]), "the photo is 1000000000x1000000000"),
        (_task([_drawn(original_height=0)]), "the photo is 40x0 pixels"),
        (_task([_drawn(value={"points": [[float("nan"), 1], [2, 3], [4, 5]]})]), "is not a number"),
        (_task([_drawn(value={"points": [[float("inf"), 1], [2, 3], [4, 5]]})]), "is not a number"),
        (_task([_drawn(value={"points": "10,10 60,10 60,50"})]), "no usable polygon"),
    ],
)
def test_a_task_not_as_label_studio_writes_it_is_left_out_with_why(task: object, why: str) -> None:
    """An export edited by hand, or another tool's JSON: each such task is left out, saying why,
    and the others still come back."""
    masks, left_out = labelled_masks([task, _task([_drawn()])])
    assert [name for name, _, _ in masks] == ["meter-1"]
    ((_, reason),) = left_out
    assert why in reason
