from __future__ import annotations

import numpy as np
import pytest

from wms.train.metrics import dice, iou


def test_perfect_and_disjoint() -> None:
    a = np.zeros((8, 8), bool)
    a[2:4, 2:4] = True
    b = np.zeros((8, 8), bool)
    b[5:7, 5:7] = True
    assert dice(a, a) == iou(a, a) == 1.0
    assert dice(a, b) == iou(a, b) == 0.0


def test_partial_overlap() -> None:
    a = np.zeros((4, 4), bool)
    a[0, :] = True  # 4 pixels
    b = np.zeros((4, 4), bool)
    b[0, :2] = True  # 2 pixels, both inside a
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert iou(a, b) == pytest.approx(2 / 4)


def test_empty_mask_convention() -> None:
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert dice(empty, empty) == iou(empty, empty) == 1.0
    assert dice(full, empty) == iou(full, empty) == 0.0
    assert dice(empty, full) == iou(empty, full) == 0.0
