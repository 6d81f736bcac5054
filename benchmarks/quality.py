"""Model quality on the real water-meter photos: prepare, train with a named recipe, score the test split.

    .venv/bin/python benchmarks/quality.py --recipe cpu --seed 1
    .venv/bin/python benchmarks/quality.py --recipe cpu --seed 2
    .venv/bin/python benchmarks/quality.py --recipe gpu

Targets: cpu, on 2 cores within 30 minutes, test Dice >= 0.90 with at most 2% of the test
photos below Dice 0.5 (each seed); gpu, test Dice >= 0.92 within 5 minutes on one H100.

The split is the project's hash split (data.val_fraction / data.test_fraction), so the
test photos are never trained on. Dice and IoU are per image at the prepared 512x512
resolution, averaged; the tail is counted below Dice 0.5 (a miss) and 0.8. Time to quality:
each epoch's elapsed training time and val Dice, and the minutes to first reach val Dice
0.80, 0.85 and 0.90. Writes benchmarks/results/quality-<recipe>[-TAG][-seedN].json.
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
LEVELS = (0.80, 0.85, 0.90)  # val Dice levels whose time to reach is reported


def real_splits(data: Path, work: Path) -> dict[str, list[Any]]:
    """The real photos prepared once to 512 px (kept in `work`), grouped into the hash splits."""
    from wms.config import DataSettings
    from wms.data.pairs import find_pairs
    from wms.data.prepare import prepare_dataset
    from wms.data.splits import assign_splits

    prepared = work / "prepared-512"
    if not (prepared / "images").is_dir():
        report = prepare_dataset(data, prepared, size=512)
        print(f"prepared {report.written} pairs, skipped {len(report.skipped)}", flush=True)
    pairs = {p.id: p for p in find_pairs(prepared).pairs}
    data_cfg = DataSettings()
    groups = assign_splits(pairs, data_cfg.val_fraction, data_cfg.test_fraction)
    return {name: [pairs[i] for i in ids] for name, ids in groups.items()}


def cpu_model() -> str:
    """The CPU's name (Linux), with whether it has AMX bf16 tiles: its epochs take half the time."""
    from wms.train.precision import cpu_has_bf16_tiles

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "unknown"
    return f"{name}, {'AMX' if cpu_has_bf16_tiles() else 'no AMX'}"


def epoch_printer() -> Any:
    """A reporter that prints one line per epoch."""
    from wms.train.progress import SilentReporter

    class EpochPrinter(SilentReporter):
        def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None:
            print(
                f"epoch {epoch:3d}  loss {metrics['train_loss']:.4f}  val Dice {metrics['val_dice']:.4f}  "
                f"{metrics['images_per_second']:.1f} img/s  ({metrics['epoch_seconds']:.0f} s)",
                flush=True,
            )

        def refine_pass_done(self, done: int, metrics: dict[str, float]) -> None:
            print(
                f"second stage, pass {done:3d}  loss {metrics['refine_loss']:.4f}"
                f"  ({metrics['refine_seconds'] / 60:.1f} min)",
                flush=True,
            )

    return EpochPrinter()


def timeline(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """Per epoch: elapsed training minutes (cumulative) and val Dice."""
    elapsed, rows = 0.0, []
    for epoch, metrics in enumerate(history, start=1):
        elapsed += metrics["epoch_seconds"]
        rows.append(
            {"epoch": epoch, "minutes": round(elapsed / 60, 2), "val_dice": round(metrics["val_dice"], 4)}
        )
    return rows


def minutes_to(rows: list[dict[str, float]], levels: tuple[float, ...] = LEVELS) -> dict[str, float | None]:
    """Minutes of training until val Dice first reached each level (None: never)."""
    return {
        f"{level:.2f}": next((row["minutes"] for row in rows if row["val_dice"] >= level), None)
        for level in levels
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="cpu")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".work")
    parser.add_argument("--max-minutes", type=float, default=None, help="override the recipe's budget")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [train] key over the recipe",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: one per core); 1 to run experiments side by side",
    )
    parser.add_argument("--seed", type=int, default=None, help="train.seed (the result file names it)")
    parser.add_argument("--tag", default="", help="name an experiment: quality-RECIPE-TAG-seedN.json")
    args = parser.parse_args()
    if not (args.data / "images").is_dir():
        print(f"skipped: real data not found at {args.data}")
        return 0

    import torch

    from wms.config import TrainSettings
    from wms.train.evaluate import evaluate, summarize
    from wms.train.loop import train
    from wms.train.recipes import apply_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    split = real_splits(args.data, args.work)
    cfg = apply_recipe(TrainSettings(), args.recipe)
    if args.max_minutes is not None:
        cfg = cfg.model_copy(update={"max_minutes": args.max_minutes})
    if args.sets:
        from wms.config import parse_overrides

        overrides = parse_overrides([f"train.{pair}" for pair in args.sets]).get("train", {})
        cfg = TrainSettings.model_validate(cfg.model_dump() | overrides)
    if args.seed is not None:
        cfg = cfg.model_copy(update={"seed": args.seed})
    print(f"recipe {args.recipe}: {cfg.model_dump()}", flush=True)
    print({name: len(members) for name, members in split.items()}, flush=True)

    train_started = time.perf_counter()
    result = train(cfg, split["train"], split["val"], epoch_printer(), args.work / "cache")
    train_seconds = time.perf_counter() - train_started
    history = timeline(result.history)
    per_image = evaluate(result.segmenter, split["test"])
    scores = summarize(per_image)
    # The model and per-image scores stay outside git (they derive from the real photos).
    name = "-".join(
        [
            args.recipe,
            *([args.tag] if args.tag else []),
            *([f"seed{args.seed}"] if args.seed is not None else []),
        ]
    )
    result.segmenter.save(args.work / f"model-{name}")
    with (args.work / f"test-scores-{name}.csv").open("w") as fh:
        fh.writelines(f"{s.id},{s.dice:.4f},{s.iou:.4f}\n" for s in per_image)
    budget = [] if args.max_minutes is None else [f"max_minutes={args.max_minutes:g}"]
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "recipe": args.recipe,
        "overrides": budget + args.sets,
        "settings": cfg.model_dump(mode="json"),
        "device": result.device,
        "precision": result.precision,
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "parameters": result.parameters,
        "splits": {name: len(members) for name, members in split.items()},
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "best_val_dice": round(result.best_val_dice, 4),
        "test_dice": round(scores["dice"], 4),
        "test_iou": round(scores["iou"], 4),
        "test_images": scores["n"],
        "test_median_dice": round(float(np.median([s.dice for s in per_image])), 4),
        "test_below_half": sum(s.dice < 0.5 for s in per_image),
        "test_below_0_8": sum(s.dice < 0.8 for s in per_image),
        "train_seconds": round(train_seconds, 1),  # both networks, and reading the photos for each
        "second_stage": result.refine,  # its passes and minutes, where the recipe has one
        "minutes_to_val_dice": minutes_to(history),
        "epochs": history,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(out, indent=2))
    target = REPO / "benchmarks" / "results" / f"quality-{name}.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    reached = "  ".join(
        f"{k}: {'never' if v is None else f'{v:.1f} min'}" for k, v in out["minutes_to_val_dice"].items()
    )
    print(f"time to val Dice  {reached}")
    print(
        f"test Dice {out['test_dice']:.4f} (median {out['test_median_dice']:.4f}), "
        f"{out['test_below_half']} of {out['test_images']} below 0.5, {out['test_below_0_8']} below 0.8"
    )
    print(f"wrote {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
