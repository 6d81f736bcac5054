"""Per-image Dice and IoU for binary masks.

Convention for empty masks: when both the prediction and the truth are empty the image
scores 1.0 (nothing to find, nothing found); when only one is empty it scores 0.0.
"""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, true: np.ndarray) -> float:
    """Dice coefficient of two boolean masks of the same shape."""
    p, t = pred.astype(bool), true.astype(bool)
    total = int(p.sum()) + int(t.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / total


def iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same shape."""
    p, t = pred.astype(bool), true.astype(bool)
    union = int(np.logical_or(p, t).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(p, t).sum()) / union
