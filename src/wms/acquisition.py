"""Which of the scored photos go into a labelling batch (`wms data suggest --strategy`).

    from wms.acquisition import select
    selection = select(ranked, count=20)            # ranked: wms.suggest.score_photos(...)[0]
    selection.chosen, selection.near_duplicates, selection.same_bytes, selection.too_unsure

Duplicates. Photos with the same bytes (sha256) count once. Then, going down the ranking, a
photo is passed over when its difference hash (64-bit dHash of a 9x8 grey thumbnail) is within
`min_distance` bits of one kept: a burst of near-identical shots costs one label, not ten.
Identical pixels give identical hashes, so pixel-identical photos are never both chosen.

Choice (`strategy`), among the photos kept:
- `power` (the default) draws the batch at random with odds proportional to the score (power
  acquisition, Kirsch et al., "Stochastic batch acquisition", arXiv:2106.12059): it leans a
  little to the unsure photos and keeps the batch as varied as the pool.
- `band` passes over the most unsure fifth (BAND_SKIP) and takes the highest scores of the rest:
  photos the model half gets. A weak model's most unsure photos are mostly ones it cannot learn
  from yet (steep, far or look-alike meters); such outliers are what makes plain uncertainty
  sampling fail (Karamcheti et al., "Mind Your Outliers!", ACL 2021). A photo with no window
  found scores 1, so a few inbox photos that are not meters at all fall in that fifth, not in
  the batch. The fifth passed over is listed as `too_unsure`.
- `diverse` clusters the photos into `count` groups by k-means weighted by score (scikit-learn's
  KMeans) over a descriptor of each photo (a 16x16 grey thumbnail and the model's 16x16
  probability map) and takes the photo nearest each centre (Zhdanov's diverse mini-batch active
  learning, arXiv:1901.05954).
- `top` takes the highest scores.
- `random` draws the batch uniformly, the score aside (duplicates are still passed over, and the
  ranking and pre-labels are written as for any batch). On the benchmark below no strategy beat
  random photos reliably, so this is the choice to fall back on, or to compare with.

What each buys, measured by benchmarks/active_learning.py on the real photos (a weak start model
on 40% of the training split, 15% more chosen from the rest): docs/labelling-and-drift.md and
benchmarks/results/active-learning*.json.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wms.inbox import Photo
from wms.suggest import Candidate, Selection

DEFAULT_MIN_DISTANCE = 6  # of 64 bits; unrelated photos differ in about 32
STRATEGIES = ("power", "band", "diverse", "top", "random")  # the first is the default
BAND_SKIP = 0.2  # `band` passes over this share of the kept photos, the most unsure


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def select(
    ranked: Sequence[Candidate],
    count: int,
    min_distance: int = DEFAULT_MIN_DISTANCE,
    strategy: str = STRATEGIES[0],
    seed: int = 0,
) -> Selection:
    """Up to `count` candidates of `ranked` (most unsure first), no two with the same bytes or
    within `min_distance` bits; `strategy` (see the module's doc) decides which."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    selection = Selection([], [], [])
    kept: dict[str, Photo] = {}
    distinct: list[Candidate] = []
    for candidate in ranked:
        if strategy == "top" and len(distinct) == count:
            break
        same = kept.get(candidate.photo.sha256)
        if same is not None:
            selection.same_bytes.append((candidate.photo, same))
            continue
        kept[candidate.photo.sha256] = candidate.photo
        near = min(distinct, key=lambda c: hamming(c.dhash, candidate.dhash), default=None)
        if near is not None and (distance := hamming(near.dhash, candidate.dhash)) <= max(0, min_distance):
            selection.near_duplicates.append((candidate, near, distance))
            continue
        distinct.append(candidate)
    if strategy == "top" or len(distinct) <= count:
        selection.chosen = distinct[:count]
    elif strategy == "band":
        # Skip the most unsure share, but never so many that fewer than `count` are left.
        skip = min(round(BAND_SKIP * len(distinct)), len(distinct) - count)
        selection.too_unsure, selection.chosen = distinct[:skip], distinct[skip : skip + count]
    elif strategy in ("power", "random"):
        selection.chosen = _draw(distinct, count, seed, weighted=strategy == "power")
    else:
        selection.chosen = _cluster_centres(distinct, count, seed)
    return selection


def _weights(candidates: Sequence[Candidate]) -> np.ndarray:
    """Each candidate's score as a weight, floored so that a sure photo keeps a small chance."""
    return np.array([max(c.score, 1e-3) for c in candidates])


def _draw(candidates: Sequence[Candidate], count: int, seed: int, weighted: bool) -> list[Candidate]:
    """`count` candidates drawn without replacement, each with odds proportional to its score
    (`weighted`, power acquisition) or all alike."""
    weights = _weights(candidates) if weighted else np.ones(len(candidates))
    picked = np.random.default_rng(seed).choice(
        len(candidates), size=count, replace=False, p=weights / weights.sum()
    )
    return [candidates[i] for i in sorted(picked.tolist())]  # `candidates` is in ranking order


def _cluster_centres(candidates: Sequence[Candidate], count: int, seed: int) -> list[Candidate]:
    """One candidate per cluster of a score-weighted k-means: the one nearest its centre."""
    from sklearn.cluster import KMeans

    points = np.stack([c.descriptor for c in candidates]).astype(np.float64)
    kmeans = KMeans(n_clusters=count, n_init=3, random_state=seed).fit(
        points, sample_weight=_weights(candidates)
    )
    chosen: list[int] = []
    for cluster, centre in enumerate(kmeans.cluster_centers_):
        members = np.flatnonzero(kmeans.labels_ == cluster)
        if members.size:
            nearest = members[np.argmin(((points[members] - centre) ** 2).sum(axis=1))]
            chosen.append(int(nearest))
    # An empty cluster (rare) leaves a place: fill it with the most unsure of the rest.
    taken = set(chosen)
    chosen += [i for i in range(len(candidates)) if i not in taken][: count - len(chosen)]
    return [candidates[i] for i in sorted(chosen)]  # `candidates` is in ranking order
