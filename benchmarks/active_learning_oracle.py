"""Active learning with the answers known: would a perfect error score buy 1.5x random's gain?

    .venv/bin/python benchmarks/active_learning_oracle.py --seeds 8    # about 45 min on 2 CPU cores
    .venv/bin/python benchmarks/active_learning_oracle.py --seeds 5 --set epochs=60 \
        --out benchmarks/results/active-learning-oracle-60epochs.json   # a stronger start model
    .venv/bin/python benchmarks/active_learning_oracle.py --seeds 3 --set image_size=256 \
        --out benchmarks/results/active-learning-oracle-256px.json   # 256 px, after active_learning.py

`wms data suggest` ranks photos by how unsure the production model is, standing in for how wrong
it is. This script asks the two questions behind that, on benchmarks/active_learning.py's
experiment (the same recipe, start models, random arms and kept trainings):
1. How well does suggest's score find the photos the start model gets wrong? Per seed, the rank
   correlation (Spearman) of the score with the start model's error (1 - Dice against the real
   mask) over the pool, and how many of the score's top photos are among the most wrong ones.
2. Would choosing by the error itself pay? The `hardest` arm takes the pool photos the start model
   gets most wrong, read off their real masks: the best any uncertainty score could do at ranking
   error. The `easiest` arm takes the ones it gets most right.
If the hardest photos do not buy 1.5x random's gain, no score that estimates the model's error
meets the goal on this experiment, however good the estimate. Each row also counts the photos of
each addition whose counter window covers under 1% of the photo (`*_small_windows`), and the
result gives their share of the pool: whether the photos the model fails on are the small ones.

Writes benchmarks/results/active-learning-oracle.json in active_learning.py's format, so
active_learning_table.py lists it and pools `hardest` over the seeds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from active_learning_experiment import (  # type: ignore[import-not-found]
    cached,
    result,
    scored,
    set_up,
    summary,
    window_share,
    write,
)

METHODS = ("hardest", "easiest")
SMALL_WINDOW = 0.01  # a window under 1% of the photo: a few pixels across at 128 px


def by_error(errors: dict[str, float], count: int, hardest: bool = True) -> list[str]:
    """The `count` ids with the largest errors (`hardest`) or the smallest, ties broken by id."""
    order = sorted(errors, key=lambda i: ((-errors[i] if hardest else errors[i]), i))
    return order[:count]


def rank_correlation(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation of two equally long lists (ties share their mean rank); None
    where either list is constant and so has no order (a start model that scores every photo 1)."""
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _pool_errors(ex: Any, model: Any, start_dir: Path) -> dict[str, float]:
    """1 - Dice of the start model on each pool photo against its real mask (kept beside the model)."""
    from wms.scores import evaluate

    return cached(
        start_dir / "pool-errors.json",
        lambda: {s.id: round(1.0 - s.dice, 5) for s in evaluate(model, ex.pool)},
    )


def main() -> int:
    started = time.perf_counter()
    args, methods, ex = set_up(__doc__, "active-learning-oracle[-quick].json", "methods", METHODS)
    if ex is None:
        return 0
    by_id = {p.id: p for p in ex.pool}
    by_image = {p.image: p.id for p in ex.pool}
    small = {p.id for p in ex.pool if window_share(p) < SMALL_WINDOW}
    runs = []
    for seed in range(args.seeds):
        model, start_dir, start_dice = ex.start(seed)
        errors = _pool_errors(ex, model, start_dir)
        picks = {method: by_error(errors, ex.n_add, hardest=method == "hardest") for method in METHODS}
        ranked = scored(model, ex.pool, start_dir)  # as suggest ranks: score, then pixel entropy
        scores = [c.score for c in ranked]
        hardest = set(picks["hardest"])
        random_arm = ex.random_addition(seed)
        row: dict[str, Any] = {
            "seed": seed,
            "start_dice": start_dice,
            "pool_mean_error": round(float(np.mean(list(errors.values()))), 4),
            "score_error_spearman": _rounded(
                rank_correlation(scores, [errors[by_image[c.photo.path]] for c in ranked])
            ),
            "top_scored_among_hardest": sum(by_image[c.photo.path] in hardest for c in ranked[: ex.n_add]),
            "random_mean_error": round(float(np.mean([errors[p.id] for p in random_arm])), 4),
            "random_small_windows": sum(p.id in small for p in random_arm),
        }
        arms = {"random": random_arm}
        for method in methods:
            arms[method] = sorted((by_id[i] for i in picks[method]), key=lambda p: p.id)
            row[f"{method}_mean_error"] = round(float(np.mean([errors[i] for i in picks[method]])), 4)
            row[f"{method}_small_windows"] = len(small.intersection(picks[method]))
        row |= ex.distant_counts(arms) | ex.gains(seed, start_dice, arms)
        print(f"seed {seed}: {json.dumps(row)}", flush=True)
        runs.append(row)
    overlaps = [r["top_scored_among_hardest"] for r in runs]
    correlations = [r["score_error_spearman"] for r in runs if r["score_error_spearman"] is not None]
    body = {
        "runs": runs,
        "score_error_spearman_mean": round(float(np.mean(correlations)), 3) if correlations else None,
        "top_scored_among_hardest_mean": round(float(np.mean(overlaps)), 1),
        "pool_small_window_share": round(len(small) / len(ex.pool), 3),
    }
    write(result(args, ex, started, body | summary(runs, methods)), args, "active-learning-oracle.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
