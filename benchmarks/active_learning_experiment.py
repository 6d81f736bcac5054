"""The active-learning experiment every benchmarks/active_learning*.py script runs on.

benchmarks/active_learning.py's docstring describes it: the real photos' hash splits, the start
model on a fixed 40% of the training split (or on the near shots only, --start near), the pool,
the small recipe, and arms retrained from scratch on the start photos plus an addition. Here are
its parts: the options the scripts share, the photos and recipe they ask for (`experiment`), the
start models and arms, kept in the work folder by what decides them (`Experiment`), the pool
ranked as `wms data suggest` ranks it (`scored`), the comparison with random photos (`summary`,
`beyond_random`) and the result file (`result`, `write`).
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
START_FROM = ("random", "near")  # --start: how the start model's photos are drawn


def stable_order(ids: list[str], salt: str) -> list[str]:
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


def test_dice(segmenter: Any, test: list[Any]) -> float:
    from wms.scores import evaluate, summarize

    return round(float(summarize(evaluate(segmenter, test))["dice"]), 4)


def scored(segmenter: Any, pool: list[Any], folder: Path) -> list[Any]:
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


def cached(path: Path, compute: Any) -> Any:
    """`compute()`'s JSON, kept in `path`: a rerun with other strategies trains only what is new."""
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value) + "\n")
    return value


def fingerprint(*parts: Any) -> str:
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
    start_from: str = "random"  # how the start photos were drawn: random | near (see --start)
    distant: frozenset[str] = frozenset()  # --start near: ids of the distant shots (all in the pool)

    @property
    def base_key(self) -> str:
        return fingerprint(self.settings, [p.id for p in self.base], [p.id for p in self.test])

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
        return model, start_dir, cached(start_dir / "test-dice.json", lambda: test_dice(model, self.test))

    def drawn(self, rng: np.random.Generator, size: int) -> list[Any]:
        """`size` photos of the pool drawn at random, in the pool's order."""
        return [self.pool[i] for i in sorted(rng.choice(len(self.pool), size=size, replace=False).tolist())]

    def random_addition(self, seed: int) -> list[Any]:
        """The baseline arm: `n_add` photos of the pool drawn with seed `seed`."""
        return self.drawn(np.random.default_rng(seed), self.n_add)

    def arm_dice(self, seed: int, name: str, added: list[Any]) -> float:
        """Test Dice of the model retrained from scratch on the start photos + `added` (kept)."""
        key = fingerprint(self.base_key, seed, sorted(p.id for p in added))
        print(f"seed {seed}: start + {len(added)} {name}", flush=True)
        return float(
            cached(
                self.work / f"arm-{key}.json",
                lambda: test_dice(
                    _train(self.config(seed), self.base + added, self.val, self.cache), self.test
                ),
            )
        )

    def distant_counts(self, arms: dict[str, list[Any]]) -> dict[str, int]:
        """From a shifted pool (--start near): how many distant shots each addition holds, as a
        result row holds them (`random_distant`, ...); nothing from the benchmark's own pool."""
        if not self.distant:
            return {}
        return {f"{name}_distant": sum(p.id in self.distant for p in added) for name, added in arms.items()}

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
        "--start",
        choices=START_FROM,
        default="random",
        help="the start photos: random (a fixed 40%%) or near (40%% of the near shots only: a shifted pool)",
    )
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
    order = stable_order([p.id for p in train_pairs], "active-learning")
    by_id = {p.id: p for p in train_pairs}
    n_base, n_add = round(BASE_SHARE * len(order)), round(ADD_SHARE * len(order))
    distant: frozenset[str] = frozenset()
    if args.start == "near":
        near, cut = near_shots(train_pairs)
        distant = frozenset(order) - near
        order = [i for i in order if i in near] + [i for i in order if i in distant]
        print(f"near shots: window share >= {cut:.4f} ({len(near)}), distant shots {len(distant)}")
    base = [by_id[i] for i in sorted(order[:n_base])]
    pool = [by_id[i] for i in sorted(order[n_base:])]
    print(f"train {len(train_pairs)}: start {len(base)} ({args.start}), pool {len(pool)}, add {n_add}")
    print(f"test {len(test)}; settings {settings}, {args.seeds} seed(s)", flush=True)
    work = args.work / ("active-learning-quick" if args.quick else "active-learning")
    return Experiment(settings, base, pool, val, test, n_add, work, args.work / "cache", args.start, distant)


def window_share(pair: Any) -> float:
    """The share of the photo its counter window covers (the prepared mask, thresholded as training does)."""
    from PIL import Image

    from wms.train.preprocess import mask_to_array

    return float(mask_to_array(Image.open(pair.mask).convert("L")).mean())


def near_shots(pairs: list[Any]) -> tuple[set[str], float]:
    """Ids of the photos whose window covers at least the lower-third share of `pairs`' photos, and
    that share."""
    share = {p.id: window_share(p) for p in pairs}
    cut = float(np.quantile(list(share.values()), 1 / 3))
    return {i for i, s in share.items() if s >= cut}, cut


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
            | {"added": ex.n_add, "val": len(ex.val), "test": len(ex.test), "start_from": ex.start_from},
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
