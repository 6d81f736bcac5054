"""How sure a model is of one mask, from its probability map.

STAND-IN, replaced on merge: the serving side of "closing the loop from production" writes
the real module with this same API (`assess`, `Assessment`); `wms data suggest` and
`wms monitor drift` build on the API only, never on how the score is made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BAND = 0.3  # a pixel whose probability is within this of the threshold is uncertain
CHECK_ABOVE = 0.5  # a score over this asks a person to look


@dataclass(frozen=True)
class Assessment:
    """How sure a model is of one mask: `score` 0 (sure) … 1 (unsure)."""

    score: float
    entropy: float  # mean binary entropy of the pixels, in bits
    uncertain_share: float  # share of the pixels within BAND of the threshold
    regions: int  # 4-connected regions of the mask
    verdict: str  # "sure" or "check this one"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess(prob: np.ndarray, threshold: float) -> Assessment:
    """Assess a (H, W) foreground probability map at the photo's size."""
    from scipy import ndimage

    p = np.clip(np.asarray(prob, dtype=np.float64), 1e-7, 1 - 1e-7)
    entropy = float(np.mean(-(p * np.log2(p) + (1 - p) * np.log2(1 - p))))
    uncertain = np.abs(p - threshold) < BAND
    mask = p > threshold
    regions = int(ndimage.label(mask)[1])
    # The counter window is a few percent of a photo: measure the unsure pixels against the
    # window they blur, not against the whole photo, or every score would be near zero.
    score = float(uncertain.sum() / max(1, int((mask | uncertain).sum())))
    if regions != 1:  # no window, or several: a person should look whatever the pixels say
        score = max(score, 0.75)
    return Assessment(
        score=round(score, 6),
        entropy=round(entropy, 6),
        uncertain_share=round(float(uncertain.mean()), 6),
        regions=regions,
        verdict="check this one" if score > CHECK_ABOVE else "sure",
    )
