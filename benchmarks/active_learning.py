"""Active learning on the real photos: do the photos `wms data suggest` picks buy more Dice than random ones?

    .venv/bin/python benchmarks/active_learning.py            # 3 seeds, about 35-55 min on 2 CPU cores
    .venv/bin/python benchmarks/active_learning.py --quick    # a smoke run of the whole path, about 5 min
    .venv/bin/python benchmarks/active_learning.py --strategies power --set epochs=60 --out F
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

Writes benchmarks/results/active-learning.json (--quick: active-learning-quick.json); photo ids
stay in the work folder (they come from the real data).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from wms.acquisition import STRATEGIES

DEFAULT_STRATEGY = STRATEGIES[0]  # what `wms data suggest` uses unless told
# suggest's `random` is this benchmark's baseline (random photos of the pool), so it is not an arm.
COMPARED = tuple(s for s in STRATEGIES if s != "random")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "water-meters"
BASE_SHARE, ADD_SHARE, GOAL = 0.40, 0.15, 1.5
SETTINGS = {  # a small recipe: nine trainings in the budget
    "image_size": 128,
    "base_channels": 8,
    "depth": 4,
    "batch_size": 8,
    "learning_rate": 6e-3,
    "epochs": 30,
    "augment_rotation": 10.0,
    "tta": False,
    "device": "cpu",
}
QUICK = {"image_size": 96, "epochs": 8, "depth": 3}


def _stable_order(ids: list[str], salt: str) -> list[str]:
    """Ids in an order fixed by a hash: the same 40% for every seed and every run."""
    return sorted(ids, key=lambda i: hashlib.sha256(f"{salt}:{i}".encode()).hexdigest())


TRAININGS: list[float] = []  # seconds of each training this invocation ran (kept ones are not rerun)


def _train(cfg: Any, pairs: list[Any], val: list[Any], cache: Path) -> Any:
    from quality import epoch_printer  # type: ignore[import-not-found]  # benchmarks/ is on sys.path

    from wms.train.loop import train

    started = time.perf_counter()
    result = train(cfg, pairs, val, epoch_printer(), cache)
    TRAININGS.append(time.perf_counter() - started)
    print(f"  trained on {len(pairs)} photos in {TRAININGS[-1]:.0f} s", flush=True)
    return result.segmenter


def _test_dice(segmenter: Any, test: list[Any]) -> float:
    from wms.scores import evaluate, summarize

    return round(float(summarize(evaluate(segmenter, test))["dice"]), 4)


def _scored(segmenter: Any, pool: list[Any], folder: Path) -> list[Any]:
    """The pool ranked as `wms data suggest` ranks it with this model (through ONNX); once per model,
    since the scores do not depend on the strategy."""
    from wms.inbox import Photo
    from wms.suggest import score_photos
    from wms.train.export import OnnxSegmenter, export_onnx
    from wms.train.spec import ONNX_FILE

    if not (folder / ONNX_FILE).is_file():
        export_onnx(segmenter, folder / ONNX_FILE)
    onnx = OnnxSegmenter.load(folder, threads=0)
    photos = [Photo(p.image, hashlib.sha256(p.image.read_bytes()).hexdigest()) for p in pool]
    ranked, _ = score_photos(onnx, photos)
    return ranked


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


def beyond_random(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """A strategy's gain minus random's over (its gain, random's gain) pairs of the same seed: the
    mean, its standard error (None for one seed), the median (which one retraining that collapsed
    barely moves) and on how many of the seeds it was above."""
    beyond = np.array([gain - random for gain, random in pairs])
    error = float(beyond.std(ddof=1) / np.sqrt(len(beyond))) if len(beyond) > 1 else None
    return {
        "mean": float(beyond.mean()),
        "median": float(np.median(beyond)),
        "standard_error": error,
        "above": int((beyond > 0).sum()),
        "seeds": len(beyond),
    }


def _cached(path: Path, compute: Any) -> Any:
    """`compute()`'s JSON, kept in `path`: a rerun with other strategies trains only what is new."""
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value) + "\n")
    return value


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class Experiment:
    """The benchmark's fixed photos and recipe. Start models and arms are trained once and kept
    in the work folder by what decides them (the recipe, the photos, the seed), so a rerun with
    another strategy, or another script choosing photos (active_learning_coverage.py), trains
    only the photo sets not seen yet."""

    settings: dict[str, Any]
    base: list[Any]  # the fixed 40% of the training split the start model trains on
    pool: list[Any]  # the other 60%, unlabelled
    val: list[Any]
    test: list[Any]
    n_add: int  # 15% of the training split
    work: Path
    cache: Path

    @property
    def base_key(self) -> str:
        return _fingerprint(self.settings, [p.id for p in self.base], [p.id for p in self.test])

    def config(self, seed: int) -> Any:
        from wms.config import TrainSettings

        return TrainSettings.model_validate(self.settings | {"seed": seed})

    def start(self, seed: int) -> tuple[Any, Path, float]:
        """Seed `seed`'s start model, its folder and its test Dice (trained on first use)."""
        from wms.train.segmenter import Segmenter

        start_dir = self.work / f"start-{self.base_key}-seed{seed}"
        if not (start_dir / "model.json").is_file():
            print(f"seed {seed}: start model", flush=True)
            _train(self.config(seed), self.base, self.val, self.cache).save(start_dir)
        model = Segmenter.load(start_dir)
        return model, start_dir, _cached(start_dir / "test-dice.json", lambda: _test_dice(model, self.test))

    def drawn(self, rng: np.random.Generator, size: int) -> list[Any]:
        """`size` photos of the pool drawn at random, in the pool's order."""
        return [self.pool[i] for i in sorted(rng.choice(len(self.pool), size=size, replace=False).tolist())]

    def random_addition(self, seed: int) -> list[Any]:
        """The baseline arm: `n_add` photos of the pool drawn with seed `seed`."""
        return self.drawn(np.random.default_rng(seed), self.n_add)

    def arm_dice(self, seed: int, name: str, added: list[Any]) -> float:
        """Test Dice of the model retrained from scratch on the start photos + `added` (kept)."""
        key = _fingerprint(self.base_key, seed, sorted(p.id for p in added))
        print(f"seed {seed}: start + {len(added)} {name}", flush=True)
        return float(
            _cached(
                self.work / f"arm-{key}.json",
                lambda: _test_dice(
                    _train(self.config(seed), self.base + added, self.val, self.cache), self.test
                ),
            )
        )

    def gains(self, seed: int, start_dice: float, arms: dict[str, list[Any]]) -> dict[str, float]:
        """Each arm's test Dice and gain over the start model, as a result row holds them."""
        row = {}
        for name, added in arms.items():
            dice = self.arm_dice(seed, name, added)
            row[f"{name}_dice"], row[f"{name}_gain"] = dice, round(dice - start_dice, 4)
        return row


def arguments(doc: str, default_out: str) -> argparse.ArgumentParser:
    """The options every active-learning benchmark takes; a script adds its own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".work")
    parser.add_argument("--out", type=Path, help=f"result file (default: benchmarks/results/{default_out})")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="a 5-minute smoke run: tiny model, few photos")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a [train] setting of the small recipe for every training (e.g. ema_decay=0.995); "
        "start models and arms are kept apart by their settings",
    )
    return parser


def experiment(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Experiment | None:
    """The photos and recipe the options ask for; None (with the reason printed) without the real data.

    A bad --set stops here with one line, before any training.
    """
    if not (args.data / "images").is_dir():
        print(f"skipped: real data not found at {args.data} (see ../shared/datasets/water-meters/README.md)")
        return None

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from pydantic import ValidationError
    from quality import real_splits  # type: ignore[import-not-found]  # benchmarks/ is on sys.path

    from wms.config import TrainSettings, parse_overrides
    from wms.errors import ConfigError

    settings = SETTINGS | (QUICK if args.quick else {})
    for pair in args.sets:
        if "=" not in pair or "." in pair.partition("=")[0]:
            parser.error(f"--set {pair!r} is not KEY=VALUE of [train]; write e.g. --set ema_decay=0.995")
    try:
        settings |= parse_overrides([f"train.{pair}" for pair in args.sets]).get("train", {})
        TrainSettings.model_validate(settings)
    except (ConfigError, ValidationError) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            parser.error(f"--set {'.'.join(map(str, first['loc'])) or '?'}: {first['msg']}")
        parser.error(str(exc))
    torch.set_num_threads(args.threads)
    split = real_splits(args.data, args.work)
    train_pairs, val, test = split["train"], split["val"], split["test"]
    if args.quick:  # the whole path on a sliver of the data
        args.seeds = 1
        train_pairs, val, test = train_pairs[:120], val[:20], test[:40]
    order = _stable_order([p.id for p in train_pairs], "active-learning")
    by_id = {p.id: p for p in train_pairs}
    n_base, n_add = round(BASE_SHARE * len(order)), round(ADD_SHARE * len(order))
    base = [by_id[i] for i in sorted(order[:n_base])]
    pool = [by_id[i] for i in sorted(order[n_base:])]
    print(f"train {len(train_pairs)}: start {len(base)}, pool {len(pool)}, add {n_add}; test {len(test)}")
    print(f"settings {settings}, {args.seeds} seed(s)", flush=True)
    work = args.work / ("active-learning-quick" if args.quick else "active-learning")
    return Experiment(settings, base, pool, val, test, n_add, work, args.work / "cache")


def summary(runs: list[dict[str, Any]], strategies: list[str]) -> dict[str, Any]:
    """Random photos' mean gain, and per strategy its mean gain, ratio and paired difference."""
    gain_random = float(np.mean([r["random_gain"] for r in runs]))
    out = {}
    for strategy in strategies:
        gain = float(np.mean([r[f"{strategy}_gain"] for r in runs]))
        ratio = round(gain / gain_random, 3) if gain_random > 0 else None
        # Paired by seed: how far the strategy's gain is from random's, and how sure that is. With
        # a standard error as large as the difference, the ratio is the seeds' luck, not the strategy.
        beyond = beyond_random([(r[f"{strategy}_gain"], r["random_gain"]) for r in runs])
        error = beyond["standard_error"]
        out[strategy] = {
            "mean_gain": round(gain, 4),
            "ratio": ratio,
            "gain_minus_random": round(beyond["mean"], 4),
            "standard_error": None if error is None else round(error, 4),
            "seeds_above_random": f"{beyond['above']} of {beyond['seeds']}",
            # With no gain from random photos, any gain from suggested ones beats every ratio.
            "goal_met": (ratio is not None and ratio >= GOAL) or (gain_random <= 0 < gain),
        }
    return {"random_mean_gain": round(gain_random, 4), "strategies": out}


def result(args: argparse.Namespace, ex: Experiment, started: float, body: dict[str, Any]) -> dict[str, Any]:
    """A result file: the machine, recipe and photos, then `body` (the arms), then the time taken."""
    import torch

    return (
        {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": args.quick,
            "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
            "torch_threads": torch.get_num_threads(),
            "settings": ex.settings,
            "photos": {"train": len(ex.base) + len(ex.pool), "start": len(ex.base), "pool": len(ex.pool)}
            | {"added": ex.n_add, "val": len(ex.val), "test": len(ex.test)},
        }
        | body
        | {
            "total_minutes": round((time.perf_counter() - started) / 60, 1),
            "trainings_run_now": len(TRAININGS),  # the others were kept from an earlier invocation
            "minutes_per_training": round(float(np.mean(TRAININGS)) / 60, 1) if TRAININGS else None,
        }
    )


def write(out: dict[str, Any], args: argparse.Namespace, name: str) -> None:
    print(json.dumps(out, indent=2))
    default = name.replace(".json", "-quick.json") if args.quick else name
    target = (args.out or REPO / "benchmarks" / "results" / default).resolve()
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {target.relative_to(REPO) if target.is_relative_to(REPO) else target}")


def listed(
    parser: argparse.ArgumentParser, value: str, choices: tuple[str, ...], what: str, hint: str = ""
) -> list[str]:
    """The names of a comma-separated option, each one of `choices` (else one line and exit 2)."""
    names = [name for name in value.split(",") if name]
    if unknown := sorted(set(names) - set(choices)):
        parser.error(f"unknown {what} {unknown}; choose from {', '.join(choices)}{hint}")
    return names


def set_up(
    doc: str, default_out: str, option: str, choices: tuple[str, ...], hint: str = ""
) -> tuple[argparse.Namespace, list[str], Experiment | None]:
    """A comparing script's options (the shared ones and `--OPTION`, which of `choices` to compare
    with random photos, all by default), those names, and the experiment (None without the real
    data)."""
    parser = arguments(doc, default_out)
    parser.add_argument(
        f"--{option}",
        default=",".join(choices),
        help=f"which to compare with random photos, comma-separated (default: {','.join(choices)})",
    )
    args = parser.parse_args()
    names = listed(parser, getattr(args, option), choices, option, hint)
    return args, names, experiment(args, parser)


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
        ranked = _scored(start_model, ex.pool, start_dir) if strategies else []
        for strategy in strategies:
            arms[strategy], row[f"{strategy}_suggest"] = _suggested(ranked, ex.pool, ex.n_add, strategy, seed)
        row |= ex.gains(seed, start_dice, arms)
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
