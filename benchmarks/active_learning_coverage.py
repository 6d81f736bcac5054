"""Active learning that knows the labelled photos: does covering what they miss beat random photos?

    .venv/bin/python benchmarks/active_learning_coverage.py --seeds 8     # about 40 min on 2 CPU cores
    .venv/bin/python benchmarks/active_learning_table.py                  # pools these runs with the rest

`wms data suggest` ranks the inbox alone: it does not know which photos the model was trained
on. At small budgets the literature picks photos that are typical of what the labelled set
lacks rather than the ones the model is least sure of (Hacohen et al., "Active learning on a
budget", ICML 2022; Yehuda et al., "Active learning through a covering lens", NeurIPS 2022).
This script tries both on benchmarks/active_learning.py's experiment (the same recipe, start
models, random arms and kept trainings), embedding every photo by suggest's descriptor (its
16x16 grey thumbnail and the start model's 16x16 probability map, each of unit length):
- `coverage` (ProbCover's greedy): a photo covers the photos within distance delta of it,
  delta being the median distance from a pool photo to its nearest start photo, so the start
  photos cover half the pool. Then the photo covering the most uncovered ones is taken, again
  and again; once all are covered, the one farthest from every photo taken or labelled.
- `typical` (TypiClust): k-means of start and pool photos into CLUSTERS groups; again and again
  the group with the fewest labelled photos (the larger on a tie) gives its most typical
  unlabelled photo, the one with the smallest mean distance to its TYPICAL_NEIGHBOURS nearest
  group members. |labelled| + budget groups, as the paper has it, would leave about 2 photos per
  group here, too few to say which is typical.
- `typical_features`: TypiClust as above over the start model's own features instead of suggest's
  descriptor, as the paper clusters learned features (it uses self-supervised ones): the output
  of the U-Net's deepest block, averaged and maxed over its positions, of unit length.

Writes benchmarks/results/active-learning-coverage.json in active_learning.py's format, so
active_learning_table.py lists it and pools `coverage` and `typical` over the seeds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from active_learning_experiment import result, scored, set_up, summary, write  # type: ignore[import-not-found]

METHODS = ("coverage", "typical", "typical_features")
CLUSTERS = 60
TYPICAL_NEIGHBOURS = 10


def distances(a: np.ndarray, b: np.ndarray, rows: int = 64) -> np.ndarray:
    """Euclidean distance of every row of `a` to every row of `b`, a block of rows at a time."""
    out = np.empty((len(a), len(b)))
    for i in range(0, len(a), rows):
        out[i : i + rows] = np.sqrt(((a[i : i + rows, None, :] - b[None, :, :]) ** 2).sum(-1))
    return out


def coverage(labelled: np.ndarray, pool: np.ndarray, count: int) -> list[int]:
    """`count` indices of `pool` chosen by greedy maximum coverage (see the module's doc)."""
    nearest = distances(pool, labelled).min(axis=1)
    delta = float(np.median(nearest))
    between = distances(pool, pool)
    covers = between <= delta  # covers[i, j]: taking photo i covers photo j
    uncovered = nearest > delta
    chosen: list[int] = []
    for _ in range(min(count, len(pool))):
        gains = (covers & uncovered[None, :]).sum(axis=1).astype(float)
        gains[chosen] = -1
        if gains.max() <= 0:  # all covered: the photo farthest from everything labelled or taken
            gains = np.where(np.isin(np.arange(len(pool)), chosen), -1, nearest)
        i = int(np.argmax(gains))
        chosen.append(i)
        uncovered &= ~covers[i]
        nearest = np.minimum(nearest, between[i])
    return chosen


def typical(labelled: np.ndarray, pool: np.ndarray, count: int, seed: int) -> list[int]:
    """`count` indices of `pool` chosen as TypiClust chooses (see the module's doc)."""
    from sklearn.cluster import KMeans

    points = np.concatenate([labelled, pool])
    groups = min(CLUSTERS, len(points))
    label = KMeans(n_clusters=groups, n_init=3, random_state=seed).fit(points).labels_
    taken = np.zeros(len(points), dtype=bool)
    taken[: len(labelled)] = True
    between = distances(points, points)
    sizes = np.bincount(label, minlength=groups)
    chosen: list[int] = []
    for _ in range(min(count, len(pool))):
        held = np.bincount(label[taken], minlength=groups)
        open_groups = np.flatnonzero(sizes > held)  # groups with a photo still to take
        group = open_groups[np.lexsort((-sizes[open_groups], held[open_groups]))[0]]
        members = np.flatnonzero(label == group)
        k = min(TYPICAL_NEIGHBOURS, len(members) - 1)
        free = members[~taken[members]]
        # Typicality: the inverse mean distance to the k nearest members (itself left out).
        spread = [np.sort(between[m, members])[1 : k + 1].mean() if k > 0 else 0.0 for m in free]
        pick = int(free[int(np.argmin(spread))])
        taken[pick] = True
        chosen.append(pick - len(labelled))
    return chosen


def features(segmenter: Any, pairs: list[Any], batch: int = 16) -> np.ndarray:
    """Each photo's deepest U-Net features (mean and max over positions), of unit length."""
    import torch

    from wms.train.preprocess import image_to_array, open_image, scale

    caught: list[torch.Tensor] = []
    deepest = segmenter.network.down[-1]
    hook = deepest.register_forward_hook(lambda _m, _i, out: caught.append(out.detach()))
    try:
        size = segmenter.spec.image_size
        with torch.no_grad():
            for start in range(0, len(pairs), batch):
                arrays = np.stack(
                    [image_to_array(open_image(p.image), size) for p in pairs[start : start + batch]]
                )
                segmenter.network(torch.from_numpy(scale(arrays)))
    finally:
        hook.remove()
    out = torch.cat(caught).flatten(2)
    pooled = torch.cat([out.mean(-1), out.amax(-1)], dim=1).double().numpy()
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True).clip(1e-12)


def _descriptors(ranked: list[Any], pairs: list[Any]) -> np.ndarray:
    by_path = {c.photo.path: c.descriptor for c in ranked}
    return np.stack([by_path[p.image] for p in pairs]).astype(np.float64)


def main() -> int:
    started = time.perf_counter()
    args, methods, ex = set_up(__doc__, "active-learning-coverage[-quick].json", "methods", METHODS)
    if ex is None:
        return 0
    runs = []
    for seed in range(args.seeds):
        start_model, start_dir, start_dice = ex.start(seed)
        ranked = scored(start_model, ex.pool, start_dir)
        pool = _descriptors(ranked, ex.pool)
        labelled = _descriptors(scored(start_model, ex.base, start_dir), ex.base)
        scores = {c.photo.path: c.score for c in ranked}
        row: dict[str, Any] = {"seed": seed, "start_dice": start_dice}
        arms = {"random": ex.random_addition(seed)}
        if "typical_features" in methods:
            learned = features(start_model, ex.base), features(start_model, ex.pool)
        for method in methods:
            if method == "coverage":
                picked = coverage(labelled, pool, ex.n_add)
            elif method == "typical":
                picked = typical(labelled, pool, ex.n_add, seed)
            else:
                picked = typical(*learned, ex.n_add, seed)
            arms[method] = [ex.pool[i] for i in sorted(picked)]
            row[f"{method}_mean_score"] = round(float(np.mean([scores[p.image] for p in arms[method]])), 4)
        row["pool_mean_score"] = round(float(np.mean(list(scores.values()))), 4)
        row |= ex.distant_counts(arms) | ex.gains(seed, start_dice, arms)
        print(f"seed {seed}: {json.dumps(row)}", flush=True)
        runs.append(row)
    write(
        result(args, ex, started, {"runs": runs} | summary(runs, methods)),
        args,
        "active-learning-coverage.json",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
