"""Active learning on the real photos: do the photos `wms data suggest` picks buy more Dice than random ones?

    .venv/bin/python benchmarks/active_learning.py            # 3 seeds, about 35-55 min on 2 CPU cores
    .venv/bin/python benchmarks/active_learning.py --quick    # a smoke run of the whole path, about 5 min
    .venv/bin/python benchmarks/active_learning.py --strategies power --set epochs=60 --out F
    .venv/bin/python benchmarks/active_learning.py --strategies power --start near --out F
    .venv/bin/python benchmarks/active_learning_table.py     # every result file, each strategy pooled

The project's hash splits of the real photos (prepared to 512 px, as benchmarks/quality.py does).
A fixed 40% of the training split (the same photos for every seed) trains the start model; the
other 60% is the unlabelled pool. Per seed s:
  1. train the start model with train.seed = s;
  2. for each strategy of `wms data suggest` but `random` (--strategies; see wms.acquisition):
     export the start model to ONNX, score the pool as `suggest` does (uncertainty and the
     mirrored second opinion, same-bytes and near-duplicate photos passed over) and choose 15%
     of the training split's size; random: the same number drawn from the pool with seed s;
  3. retrain from scratch with the same settings and seed on 40% + each addition;
  4. score the start model and every retrained one on the test split (mean Dice per image).
Gain of an arm = its test Dice - the start model's, paired by seed. The goal: the photos chosen
by suggest's default strategy buy at least 1.5x the gain of random ones (ratio of the mean gains).
Beside the ratio: each strategy's gain minus random's, paired by seed, with its standard error and
the number of seeds it beat random on. Two trainings on the same photos with the same seed ended
0.005-0.016 apart in test Dice on two days (CPU kernels are not bit-exact), as large as the gains,
so a ratio whose difference from random is within two standard errors of zero says little.
The small, fixed recipe (128 px, a narrow U-Net, no flip TTA, 30 epochs) keeps the trainings
within the budget; it is not the production recipe, so absolute Dice is lower than
benchmarks/quality.py's. Start models and arms are kept in the work folder by what decides them
(recipe, photos, seed), so a rerun trains only the photo sets it has not seen; delete
benchmarks/.work/active-learning after a change to the training code.

--start near asks a second question, of a shifted pool: the start model has seen near shots only.
Its 40% is drawn, in the same fixed order, from the training photos whose counter window covers
at least the split's lower-third share of the photo, as if users had since begun to photograph
their meters from further away; the pool holds the rest, every distant shot among them. The test
split is unchanged, so a third of it is distant shots the start model has not seen the like of.
Each seed's row counts the distant shots in every addition (`random_distant`, `power_distant`).

The experiment's parts, shared with the other active_learning*.py scripts, are in
active_learning_experiment.py. Writes benchmarks/results/active-learning.json (--quick:
active-learning-quick.json); photo ids stay in the work folder (they come from the real data).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from active_learning_experiment import GOAL, result, scored, set_up, summary, write  # type: ignore[import-not-found]

from wms.acquisition import STRATEGIES

DEFAULT_STRATEGY = STRATEGIES[0]  # what `wms data suggest` uses unless told
# suggest's `random` is this benchmark's baseline (random photos of the pool), so it is not an arm.
COMPARED = tuple(s for s in STRATEGIES if s != "random")


def _suggested(
    ranked: list[Any], pool: list[Any], count: int, strategy: str, seed: int
) -> tuple[list[Any], dict[str, Any]]:
    """The `count` pool pairs `wms data suggest --strategy S` would choose from the ranked pool."""
    from wms.acquisition import select

    selection = select(ranked, count, strategy=strategy, seed=seed)
    by_image = {p.image: p for p in pool}
    chosen = [by_image[c.photo.path] for c in selection.chosen]
    stats = {
        "pool_mean_score": round(float(np.mean([c.score for c in ranked])), 4),
        "chosen_mean_score": round(float(np.mean([c.score for c in selection.chosen])), 4),
        "near_duplicates_passed_over": len(selection.near_duplicates),
        "same_bytes_passed_over": len(selection.same_bytes),
    }
    return chosen, stats


def main() -> int:
    started = time.perf_counter()
    args, strategies, ex = set_up(
        __doc__, "active-learning[-quick].json", "strategies", COMPARED, " (random is the baseline)"
    )
    if ex is None:
        return 0
    runs: list[dict[str, Any]] = []
    chosen_ids: dict[str, list[str]] = {}
    for seed in range(args.seeds):
        start_model, start_dir, start_dice = ex.start(seed)
        row: dict[str, Any] = {"seed": seed, "start_dice": start_dice}
        arms = {"random": ex.random_addition(seed)}
        ranked = scored(start_model, ex.pool, start_dir) if strategies else []
        for strategy in strategies:
            arms[strategy], row[f"{strategy}_suggest"] = _suggested(ranked, ex.pool, ex.n_add, strategy, seed)
        row |= ex.distant_counts(arms) | ex.gains(seed, start_dice, arms)
        chosen_ids |= {f"seed{seed}-{name}": [p.id for p in added] for name, added in arms.items()}
        print(f"seed {seed}: {json.dumps(row)}", flush=True)
        runs.append(row)
    (ex.work / "chosen.json").write_text(json.dumps(chosen_ids, indent=1) + "\n")

    compared = summary(runs, strategies)
    default = compared["strategies"].get(DEFAULT_STRATEGY)
    out = result(
        args,
        ex,
        started,
        {"runs": runs}
        | compared
        | {
            "goal": f"suggested gain >= {GOAL}x random gain, with `wms data suggest`'s default strategy",
            "default_strategy": DEFAULT_STRATEGY,
            "goal_met": None if default is None else default["goal_met"],
        },
    )
    write(out, args, "active-learning.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
