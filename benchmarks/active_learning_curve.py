"""How much is 1.5x random photos' gain worth? The learning curve of random photos on the benchmark.

    .venv/bin/python benchmarks/active_learning_curve.py     # 3 seeds, about 30 min on 2 CPU cores

benchmarks/active_learning.py asks whether the 15% of the training split that `wms data suggest`
picks buys 1.5x the test Dice that 15% drawn at random buys. This script puts that goal in photos:
on the same experiment (recipe, start models, kept trainings), it adds random photos of the pool
in several amounts (SHARES of the training split; 15% is the benchmark's random arm, and the
whole pool is the last point), and reads off the mean curve how many random photos buy the gain
the goal asks for. A selection meeting the goal makes each of its photos worth that many over 88.

Writes benchmarks/results/active-learning-curve.json.
"""

from __future__ import annotations

import json
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from active_learning_experiment import GOAL, arguments, experiment, result, write  # type: ignore[import-not-found]

SHARES = (0.075, 0.15, 0.30, 0.60)  # of the training split; 0.15 is the benchmark's arm, 0.60 the whole pool


def photos_for(gain: float, added: list[int], gains: list[float]) -> float | None:
    """How many added photos buy `gain` on the curve (linear between its points, which start at
    0 photos and 0 gain); None beyond its last point."""
    points = [(0, 0.0), *zip(added, gains, strict=True)]
    for (x0, y0), (x1, y1) in pairwise(points):
        if y0 <= gain <= y1 and y1 > y0:
            return x0 + (gain - y0) / (y1 - y0) * (x1 - x0)
    return None


def main() -> int:
    parser = arguments(__doc__, "active-learning-curve[-quick].json")
    args = parser.parse_args()
    started = time.perf_counter()
    ex = experiment(args, parser)
    if ex is None:
        return 0
    train = len(ex.base) + len(ex.pool)
    sizes = [min(len(ex.pool), round(share * train)) for share in SHARES]
    runs = []
    for seed in range(args.seeds):
        _, _, start_dice = ex.start(seed)
        row: dict[str, Any] = {"seed": seed, "start_dice": start_dice}
        rng = np.random.default_rng([seed, 1])
        for size in sizes:
            # At 15% the benchmark's own arm, kept; other sizes drawn apart from it.
            added = ex.random_addition(seed) if size == ex.n_add else ex.drawn(rng, size)
            dice = ex.arm_dice(seed, "random photos", added)
            row[f"gain_{size}"] = round(dice - start_dice, 4)
        print(f"seed {seed}: {json.dumps(row)}", flush=True)
        runs.append(row)
    gains = [round(float(np.mean([r[f"gain_{size}"] for r in runs])), 4) for size in sizes]
    goal_gain = GOAL * gains[sizes.index(ex.n_add)] if ex.n_add in sizes else None
    worth = photos_for(goal_gain, sizes, gains) if goal_gain is not None else None
    curve = {
        "added": sizes,
        "mean_gain": gains,
        "goal_gain": None if goal_gain is None else round(goal_gain, 4),
        # How many random photos buy GOAL x the gain of 88: what the goal asks of 88 chosen ones.
        "random_photos_for_goal": None if worth is None else round(worth),
    }
    write(result(args, ex, started, {"runs": runs, "curve": curve}), args, "active-learning-curve.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
