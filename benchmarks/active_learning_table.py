"""The active-learning runs side by side, and each strategy pooled over every recipe tried.

    .venv/bin/python benchmarks/active_learning_table.py > benchmarks/results/active-learning-table.md

One Markdown row per benchmarks/results/active-learning*.json (not the quick smoke run): what its
recipe changes over benchmarks/active_learning.py's small one (or its start photos, --start), the
seeds, random photos' mean gain in test Dice, and each strategy's mean gain with its ratio to
random's. Then, per strategy, its gain minus random's pooled over the runs: one value per (recipe,
seed), paired within one file, taken from the newest file that has it (runs of one recipe share
seeds, so a seed counts once). Runs from a shifted pool (--start near) are pooled on their own.
A pooled difference far from zero in standard errors says more than any one run's ratio. The
median difference stands beside the mean: one retraining that collapses moves the mean of 8 seeds
by about 0.01 and the median hardly at all.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from active_learning_experiment import (  # type: ignore[import-not-found]
    SETTINGS,  # the small recipe every run changes
    beyond_random,
)

RESULTS = Path(__file__).resolve().parent / "results"


def start_from(result: dict[str, Any]) -> str:
    """How a run drew its start photos (`--start`; files written before the option: random)."""
    return str(result.get("photos", {}).get("start_from", "random"))


def changes(result: dict[str, Any]) -> str:
    """What a run changes over the small recipe and its random start photos, e.g. `epochs=60`."""
    changed = [f"{k}={v}" for k, v in sorted(result["settings"].items()) if SETTINGS.get(k) != v]
    if start_from(result) != "random":
        changed.append(f"--start {start_from(result)}")
    return ", ".join(changed) or "none"


def runs(folder: Path = RESULTS) -> list[tuple[str, dict[str, Any]]]:
    """The result files in `folder` (not the quick smoke runs), oldest first."""
    found = []
    for path in sorted(folder.glob("active-learning*.json")):
        result = json.loads(path.read_text())
        # Comparisons with random photos only (not active_learning_curve.py's curve).
        if not result.get("quick") and "random_gain" in (result.get("runs") or [{}])[0]:
            found.append((path.name, result))
    return sorted(found, key=lambda item: item[1]["when"])


def strategies(result: dict[str, Any]) -> list[str]:
    return [k.removesuffix("_gain") for k in result["runs"][0] if k.endswith("_gain") and k != "random_gain"]


def table(found: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = [
        "| file | changes over the small recipe | seeds | random gain | strategies: gain (ratio to random) |",
        "|---|---|---|---|---|",
    ]
    for name, result in found:
        rows = result["runs"]
        random = float(np.mean([r["random_gain"] for r in rows]))
        arms = []
        for strategy in strategies(result):
            gain = float(np.mean([r[f"{strategy}_gain"] for r in rows]))
            ratio = f"{gain / random:.2f}x" if random > 0 else "-"
            arms.append(f"{strategy} {gain:+.4f} ({ratio})")
        lines.append(f"| {name} | {changes(result)} | {len(rows)} | {random:+.4f} | {', '.join(arms)} |")
    return lines


def pooled(found: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Per strategy: gain minus random's over every (recipe, seed), the newest file's pair winning."""
    pairs: dict[str, dict[tuple[str, int], tuple[float, float]]] = defaultdict(dict)
    for _, result in found:  # oldest first, so a newer file overwrites
        recipe = json.dumps([result["settings"], start_from(result)], sort_keys=True)
        for strategy in strategies(result):
            for r in result["runs"]:
                pairs[strategy][(recipe, r["seed"])] = (r[f"{strategy}_gain"], r["random_gain"])
    lines = [
        "| strategy | recipes | seeds | its gain | random's gain | minus random ± standard error "
        "| median minus random | above random |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for strategy, by_seed in pairs.items():
        gains = np.array(list(by_seed.values()))
        beyond = beyond_random(list(by_seed.values()))
        error = "nan" if beyond["standard_error"] is None else f"{beyond['standard_error']:.4f}"
        lines.append(
            f"| {strategy} | {len({recipe for recipe, _ in by_seed})} | {beyond['seeds']} "
            f"| {gains[:, 0].mean():+.4f} | {gains[:, 1].mean():+.4f} "
            f"| {beyond['mean']:+.4f} ± {error} | {beyond['median']:+.4f} "
            f"| {beyond['above']} of {beyond['seeds']} |"
        )
    return lines


def by_start(found: list[tuple[str, dict[str, Any]]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The runs grouped by how they drew their start photos, random first: each group is pooled on
    its own, since a shifted pool (--start near) asks another question than the benchmark's."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {"random": []}
    for name, result in found:
        groups.setdefault(start_from(result), []).append((name, result))
    return groups


def main() -> int:
    found = runs()
    if not found:
        print(f"no active-learning results in {RESULTS}; run benchmarks/active_learning.py first")
        return 1
    print("## Each run\n")
    print("\n".join(table(found)))
    print("\n## Each strategy over every recipe (a seed of a recipe counts once)\n")
    groups = by_start(found)
    print("\n".join(pooled(groups.pop("random"))))
    for start, group in groups.items():
        print(f"\n## The same, from the shifted pool (--start {start})\n")
        print("\n".join(pooled(group)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
