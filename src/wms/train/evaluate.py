"""Per-image evaluation of a segmenter on labelled pairs, at each mask's own resolution.

The code lives in the torch-free `wms.scores` (the gate imports it without torch); these
names stay here for the callers that import them from training.
"""

from __future__ import annotations

from wms.scores import ImageScore, evaluate, summarize

__all__ = ["ImageScore", "evaluate", "summarize"]
