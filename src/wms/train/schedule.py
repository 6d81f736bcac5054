"""The learning-rate schedule both networks train with."""

from __future__ import annotations

import math


def learning_rate(peak: float, done: float) -> float:
    """Linear warm-up over the first 5% of training, then cosine decay to zero."""
    done = min(max(done, 0.0), 1.0)
    if done < 0.05:
        return peak * (0.1 + 0.9 * done / 0.05)
    return peak * 0.5 * (1 + math.cos(math.pi * (done - 0.05) / 0.95))
