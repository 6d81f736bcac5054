"""Choose the gate's defaults by measurement: how often does a rule promote a model no better
than production, and how often one better by +0.02 Dice?

    .venv/bin/python benchmarks/gate_calibration.py measure    # ~22 min on 2 CPU cores
    .venv/bin/python benchmarks/gate_calibration.py simulate   # ~15 min (--trials 1000: half)

`measure` trains two equally good models on the real photos (the CPU recipe at 128 px, two
seeds, side by side for 20 minutes of wall clock), scores both per image on the hash test
split through their ONNX exports on ONNX Runtime, as the gate does, and writes only the
per-image score arrays (no file names, no images) to benchmarks/results/gate-spread.json.

`simulate` draws comparisons from those arrays (see `draw`): one model plays production, the
other, moved onto its mean, a candidate no better, or better by +0.02 mean Dice. Each rule of
a grid is applied to every simulated comparison by the same rule `wms.gate.decide` applies
(vectorised, exact for the trimmed mean of each bootstrap resample; checked against `decide`
itself on a sample); the table of false-promotion rate and power goes to
benchmarks/results/gate-calibration.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "water-meters"
RESULTS = REPO / "benchmarks" / "results"
SPREAD_FILE = RESULTS / "gate-spread.json"
TABLE_FILE = RESULTS / "gate-calibration.json"
SEEDS = (1, 2)
BETTER_BY = 0.02
MAX_FALSE_PROMOTION, MIN_POWER = 0.05, 0.80
RULE_KEYS = ("require_significant", "confidence", "min_delta")
POWER_CURVE = (0.01, 0.015, 0.02, 0.03)


def _splits(args: argparse.Namespace) -> dict[str, list[Any]]:
    from quality import real_splits  # beside this script: the same preparation and splits

    return dict(real_splits(args.data, args.work))


def _settings(args: argparse.Namespace) -> Any:
    from wms.config import TrainSettings
    from wms.train.recipes import apply_recipe

    return apply_recipe(TrainSettings(), "cpu").model_copy(
        update={"image_size": args.image_size, "max_minutes": args.max_minutes, "device": "cpu"}
    )


def measure_one(args: argparse.Namespace) -> int:
    """Train one seed, export, score the test split through ONNX; write .work/gate-seedN/scores.json."""
    import torch
    from quality import epoch_printer  # type: ignore[import-not-found]  # benchmarks/ is on sys.path

    from wms.scores import evaluate_onnx, summarize
    from wms.train.export import export_onnx
    from wms.train.loop import train
    from wms.train.spec import ONNX_FILE

    torch.set_num_threads(args.threads)
    split = _splits(args)
    cfg = _settings(args).model_copy(update={"seed": args.seed})
    print(f"seed {args.seed}: {cfg.model_dump(mode='json')}", flush=True)
    started = time.perf_counter()
    result = train(cfg, split["train"], split["val"], epoch_printer(), args.work / "cache")
    folder = args.work / f"gate-seed{args.seed}"
    result.segmenter.save(folder)
    export_onnx(result.segmenter, folder / ONNX_FILE)
    scores = evaluate_onnx(folder, split["test"])
    mean = summarize(scores)
    print(f"seed {args.seed}: test Dice {mean['dice']:.4f} IoU {mean['iou']:.4f} (ONNX)", flush=True)
    record = {
        "seed": args.seed,
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "train_seconds": round(time.perf_counter() - started, 1),
        "mean_dice": round(mean["dice"], 4),
        "mean_iou": round(mean["iou"], 4),
        # The split's order, the same for both seeds; image ids are left out on purpose.
        "dice": [round(s.dice, 5) for s in scores],
        "iou": [round(s.iou, 5) for s in scores],
    }
    (folder / "scores.json").write_text(json.dumps(record) + "\n")
    return 0


def measure(args: argparse.Namespace) -> int:
    """Train the seeds side by side (one thread each) and save their per-image scores."""
    import subprocess

    if not (args.data / "images").is_dir():
        print(f"skipped: real data not found at {args.data}")
        return 0
    split = _splits(args)  # prepares once, before the children read it
    common = ["--data", str(args.data), "--work", str(args.work)]
    common += ["--image-size", str(args.image_size), "--max-minutes", str(args.max_minutes)]
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "measure-one", "--seed", str(seed), "--threads", "1", *common],
            env=os.environ | {"OMP_NUM_THREADS": "1"},
        )
        for seed in SEEDS
    ]
    if any(child.wait() for child in children):
        print("a training failed; see its output above")
        return 1
    models = [json.loads((args.work / f"gate-seed{seed}" / "scores.json").read_text()) for seed in SEEDS]
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "what": "per-image test Dice/IoU of two models that differ only by seed, through ONNX Runtime",
        "command": "benchmarks/gate_calibration.py measure",
        "settings": _settings(args).model_dump(mode="json", exclude={"seed", "cache_dir"}),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, both trainings side by side",
        "splits": {name: len(members) for name, members in split.items()},
        "test_images": len(split["test"]),
        "models": models,
    }
    SPREAD_FILE.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {SPREAD_FILE.relative_to(REPO)}")
    return 0


# -- the simulation ------------------------------------------------------------------------


def load_spread(path: Path = SPREAD_FILE) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice of the two measured models, in the same image order."""
    models = json.loads(path.read_text())["models"]
    return np.array(models[0]["dice"]), np.array(models[1]["dice"])


def iou_of(dice: np.ndarray) -> np.ndarray:
    """Per image, IoU is a function of Dice (IoU = D / (2 - D)), so a simulated Dice gives the IoU."""
    return dice / (2.0 - dice)


def draw(a: np.ndarray, b: np.ndarray, gain: float, trials: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`trials` simulated comparisons, as (n, trials) arrays of per-image Dice: baseline, candidate.

    One measured model plays production, the other the candidate, with its mean moved onto
    production's over the measured images (equally good), then improved by `gain` in mean
    Dice, spread over images by their room to 1 (never above 1). Each trial draws a new test
    split of the same size from the measured images, so the mean Δ and its interval vary as
    they would between test splits. Which model plays production alternates.
    """
    rng = np.random.default_rng(seed)
    n = len(a)
    populations = []
    for base, other in ((a, b), (b, a)):
        cand = np.clip(other - other.mean() + base.mean(), 0.0, 1.0)
        if gain:
            room = 1.0 - cand
            cand = np.clip(cand + room * (gain / room.mean()), 0.0, 1.0)
        populations.append((base, cand))
    idx = rng.integers(0, n, size=(n, trials))
    swap = rng.random(trials) < 0.5
    base = np.where(swap, populations[1][0][idx], populations[0][0][idx])
    cand = np.where(swap, populations[1][1][idx], populations[0][1][idx])
    return base, cand


def resampled_trimmed_means(diff: np.ndarray, counts: np.ndarray, trim: float) -> np.ndarray:
    """The trimmed mean of every bootstrap resample of one trial's Δ, as scipy's trim_mean gives it.

    `counts` (resamples, n) says how often each image is drawn. In sorted order, a resample
    keeps the draws whose rank falls in [cut, n - cut), so each value's weight is the overlap
    of its run of ranks with that window: no resample is materialised or sorted.
    """
    n = len(diff)
    cut = int(trim * n)
    order = np.argsort(diff, kind="stable")
    upper = np.cumsum(counts[:, order], axis=1)
    lower = upper - counts[:, order]
    weights = np.clip(np.minimum(upper, n - cut) - np.maximum(lower, cut), 0, None)
    return np.asarray(weights @ diff[order] / (n - 2 * cut))


def promoted(cfg: Any, base: np.ndarray, cand: np.ndarray, seed: int = 0) -> np.ndarray:
    """The rules of `decide` for every trial (bootstrap resamples shared across trials)."""
    n, trials = base.shape
    ok = np.ones(trials, dtype=bool)
    counts = None
    if cfg.require_significant:
        counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=cfg.bootstrap_resamples)
    for metric in cfg.metrics:
        diff = cand - base if metric == "dice" else iou_of(cand) - iou_of(base)
        ok &= diff.mean(axis=0) > cfg.min_delta
        if counts is not None:
            q = (1.0 - cfg.confidence) / 2.0
            low = np.array(
                [np.quantile(resampled_trimmed_means(diff[:, t], counts, cfg.trim), q) for t in range(trials)]
            )
            ok &= low > 0
    for metric, allowance in cfg.max_regression.items():
        diff = cand - base if metric == "dice" else iou_of(cand) - iou_of(base)
        ok &= diff.mean(axis=0) >= -allowance
    return ok


def rates(
    cfg: Any, a: np.ndarray, b: np.ndarray, trials: int, seed: int = 0, gain: float = BETTER_BY
) -> dict[str, float]:
    """False-promotion rate (candidate no better) and power (candidate better by `gain`) of `cfg`."""
    null = promoted(cfg, *draw(a, b, 0.0, trials, seed), seed=seed + 1)
    better = promoted(cfg, *draw(a, b, gain, trials, seed + 2), seed=seed + 3)
    return {"false_promotion": float(null.mean()), "power": float(better.mean())}


def agreement_with_decide(cfg: Any, a: np.ndarray, b: np.ndarray, trials: int, seed: int) -> float:
    """Share of simulated comparisons where `promoted` and the real `decide` give the same verdict."""
    from wms.gate import decide
    from wms.scores import ImageScore

    same = 0
    for gain in (0.0, BETTER_BY):
        base, cand = draw(a, b, gain, trials, seed)
        fast = promoted(cfg, base, cand, seed)
        for t in range(trials):
            pair = [
                [ImageScore(str(i), float(d), float(iou_of(d))) for i, d in enumerate(col[:, t])]
                for col in (cand, base)
            ]
            same += decide(cfg, pair[0], pair[1], "production").promote == fast[t]
    return same / (2 * trials)


def grid() -> list[dict[str, Any]]:
    """The candidate rules: a margin alone, or significance of the (trimmed) mean Δ at a confidence."""
    rules: list[dict[str, Any]] = [
        {"require_significant": False, "min_delta": d} for d in (0.0, 0.005, 0.01, 0.015)
    ]
    significant = {"require_significant": True, "min_delta": 0.0}
    rules += [significant | {"trim": 0.0, "confidence": c} for c in (0.8, 0.9, 0.95)]
    rules += [significant | {"trim": t, "confidence": c} for t in (0.1, 0.2) for c in (0.9, 0.95)]
    return rules


def simulate(args: argparse.Namespace) -> int:
    """Apply every rule of the grid to simulated comparisons; write the table."""
    from wms.config import GateSettings

    a, b = load_spread()
    spread = json.loads(SPREAD_FILE.read_text())
    diff = b - a
    print(
        f"{len(a)} test images; mean Dice {a.mean():.4f} / {b.mean():.4f}; paired Δ mean {diff.mean():+.4f}, "
        f"sd {diff.std(ddof=1):.4f}",
        flush=True,
    )
    rows = []
    for rule in grid():
        cfg = GateSettings(**rule, bootstrap_resamples=args.resamples)
        r = rates(cfg, a, b, args.trials)
        meets = r["false_promotion"] <= MAX_FALSE_PROMOTION and r["power"] >= MIN_POWER
        rows.append(rule | r | {"meets": meets})
        print(
            f"{json.dumps(rule):70s} false promotion {r['false_promotion']:6.1%}  power {r['power']:6.1%}"
            + ("  meets both" if meets else ""),
            flush=True,
        )
    default = GateSettings(bootstrap_resamples=args.resamples)
    checks = {
        str(c): agreement_with_decide(
            GateSettings(require_significant=True, confidence=c, bootstrap_resamples=args.resamples),
            a,
            b,
            args.check_trials,
            seed=7,
        )
        for c in (0.8, 0.9, 0.95)
    }
    print(f"agreement with wms.gate.decide on {2 * args.check_trials} comparisons each: {checks}")
    chosen = rates(default, a, b, args.trials)
    curve = {str(gain): rates(default, a, b, args.trials, gain=gain)["power"] for gain in POWER_CURVE}
    print(f"default rule, power by gain in mean Dice: {curve}")
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "benchmarks/gate_calibration.py simulate",
        "spread": {
            "file": str(SPREAD_FILE.relative_to(REPO)),
            "test_images": len(a),
            "mean_dice": [round(float(a.mean()), 4), round(float(b.mean()), 4)],
            "paired_delta_sd": round(float(diff.std(ddof=1)), 4),
            "settings": spread["settings"],
        },
        "targets": {
            "max_false_promotion": MAX_FALSE_PROMOTION,
            "min_power": MIN_POWER,
            "better_by": BETTER_BY,
        },
        "trials": args.trials,
        "bootstrap_resamples": args.resamples,
        "agreement_with_decide": checks,
        "rules": rows,
        "default": {
            k: v
            for k, v in default.model_dump().items()
            if k in ("require_significant", "confidence", "min_delta", "trim")
        }
        | chosen,
    }
    TABLE_FILE.write_text(json.dumps(out, indent=1) + "\n")
    print(f"default rule: {out['default']}")
    print(f"wrote {TABLE_FILE.relative_to(REPO)}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("measure", "measure-one"):
        m = sub.add_parser(name, help="train two models and save their per-image scores")
        m.add_argument("--data", type=Path, default=DEFAULT_DATA)
        m.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".work")
        m.add_argument("--image-size", type=int, default=128)
        m.add_argument("--max-minutes", type=float, default=20.0, help="each, wall clock, side by side")
        if name == "measure-one":
            m.add_argument("--seed", type=int, required=True)
            m.add_argument("--threads", type=int, default=1)
    s = sub.add_parser("simulate", help="false-promotion rate and power of a grid of rules")
    s.add_argument("--trials", type=int, default=2000)
    s.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples inside each decision")
    s.add_argument("--check-trials", type=int, default=100, help="comparisons also run through decide()")
    args = parser.parse_args()
    if args.command == "measure":
        return measure(args)
    if args.command == "measure-one":
        return measure_one(args)
    return simulate(args)


if __name__ == "__main__":
    sys.exit(main())
