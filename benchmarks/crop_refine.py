"""Would a second stage lift the test scores? Crop-and-refine on top of a saved quality model.

    # stage 1: 20 minutes at 128 px, depth 5; stage 2: 8 minutes, depth 4, on turned crops
    .venv/bin/python benchmarks/quality.py --recipe cpu --seed 1 --max-minutes 20 \
        --set image_size=128 --set early_scale=1.0 --set epochs=200 --set depth=5 --tag s1-128-d5-20
    .venv/bin/python benchmarks/crop_refine.py cpu-s1-128-d5-20-seed1 --minutes 8 --align --depth 4 \
        --tag align-s2d4

Stage 1 is the saved model: it finds the window in the whole photo, shrunk to its image_size.
Stage 2, trained here for `--minutes` on the training split (stage 1's network, or `--depth`),
sees a square crop of the 512 px photo around the window, `--margin` times the window's length,
resized to `--size` px. It learns on crops around the true window, jittered in place, size and
angle as stage 1's boxes would be. With `--align` every crop is turned so that the window's
long axis (the principal axis of its pixels: of the true mask in training, of stage 1's region
in prediction, either way round) lies flat: stage 2 then sees upright and tilted windows as
level ones; `--elongated` lists the least length/width ratios of a region for its axis to be
trusted (a fragment's is not; below it the crop is not turned), chosen on the validation split.
It predicts on a crop around stage 1's largest region, or around all its regions, or on both
keeping the answer with more probability mass (the heavier), or first around all regions and
then around the largest region it found there; its mask replaces stage 1's (an empty answer
falls back on the narrower crop, then on stage 1). The input side (`--predict-sizes`) and the
elongation are those whose heavier crop scores best on the validation split; the test split's
score for each is shown beside, never used.

Measured (test Dice of the heavier crop, of 132 photos below 0.5), 28 minutes of training:
- stage 1 at 192 px (`cpu-stage1-20`), stage 2 not turned: 0.906 and 0.906, stage 2 trained
  once more (`-again`): 0.891 and 0.897; 4-7 below 0.5;
- stage 1 at 128 px (`cpu-s1-128-20`: 108-119 epochs instead of 55-58), not turned: 0.908 and 0.928,
  5 and 1 below 0.5; turned (`-align`): 0.911 and 0.929, 5 and 3 below 0.5, median 0.958, 0.956;
  seed 3, turned: 0.918, 4 below 0.5;
- the same with depth 5 in both stages (`cpu-s1-128-d5-20`, 94-112 epochs): stage 1 alone 0.869,
  0.888, 0.877 (5, 4, 7 below 0.5; depth 4: 0.860, 0.858, 0.865), both stages 0.917, 0.926,
  0.916 (3, 4, 5 below 0.5): the same mean, 0.920, as depth 4. Stage 2 sets the result, and the
  photos it misses (a small window far off, a tilted dark one) are missed by every seed;
- depth 5 in stage 1 only (`--depth 4` for stage 2, `-align-s2d4`): 0.932 and 0.934 (seeds 1, 2),
  3 and 2 below 0.5, 6 and 5 below 0.8, median 0.961 and 0.957: the best so far; seed 3:
  0.919, 4 below 0.5, 5 below 0.8 (mean of the three 0.928).
On the 26-minute `cpu-idle-seedN` models, 4 minutes of stage 2 (`-m4`) lowered them: 0.877, 0.879.

With `--negatives F`, a share F of its crops are around something else: stage 1's false
regions on the training photos (mined before stage 2 trains, counted in its minutes) or a
random place, the target being whatever of the window falls in the crop (mostly nothing).
Stage 2 is then also run on a crop around each of stage 1's regions (at most `--regions`):
the union of its masks, or the one with the most probability, replaces stage 1's. Measured on
`cpu-stage1-20-seed1` with `--negatives 0.3`, every variant lost (crop around all regions:
0.860, against 0.891-0.894 without): stage 2 answered less on true windows too, and nothing on
a crop around a fragment of one.

Writes benchmarks/results/crop-refine-NAME[-TAG].json: test Dice (mean, median, < 0.5, < 0.8)
of each variant and how stage 2 was trained (per-photo scores in
benchmarks/.work/crop-refine-scores-NAME[-TAG].csv, stage 2's weights beside them, which
`--reuse` loads to score the variants again without training).
The `cpu` recipe now trains the last of these (depth 5 at 128 px, then a depth-4 stage 2 at
160 px, turned; wms.train.second_stage) and a saved model holds both networks (wms.refine
predicts with the heavier crop). This benchmark stays for trying stage 2 variants on a
saved stage 1 without training it again; it crops with the same wms.crops.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import astuple
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from quality import REPO, real_splits
from scipy import ndimage
from tail_variants import saved_model, saved_model_parser
from tta_effect import report
from window_crops import SIDE, Refiner, crop, load, region_boxes, stage1_probabilities, thetas

from wms.crops import bounding_box, largest_region, locate

if TYPE_CHECKING:
    import torch


def refine_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE on every crop, soft Dice only on the crops that hold some window.

    `bce_dice`'s Dice on a crop with no window is 1 / (1 + predicted pixels): a push to answer
    less everywhere. Measured with `--negatives 0.3` on seed 1 (crop around the largest region):
    0.830 with `bce_dice`, 0.820 with this loss, against 0.865-0.875 without negatives.
    """
    import torch.nn.functional as F

    from wms.train.losses import soft_dice

    bce = F.binary_cross_entropy_with_logits(logits, target)
    held = target.flatten(1).sum(dim=1) > 0
    return bce + (1 - soft_dice(logits[held], target[held])).sum() / max(int(held.sum()), 1)


def mine_false_regions(
    stage1: Any, train_x: np.ndarray, train_y: np.ndarray, least: float
) -> list[tuple[int, float, float, float]]:
    """(photo, cx, cy, side) of stage 1's regions on the training photos that miss the window."""
    import torch

    hard = []
    with torch.no_grad():
        for k in range(len(train_x)):  # one photo at a time: 589 maps at once would take 600 MB
            prob = stage1_probabilities(stage1, train_x[k : k + 1])[0]
            labels, count = ndimage.label(prob > stage1.spec.threshold)
            for r in range(1, count + 1):
                region = labels == r
                if (region & (train_y[k, 0] > 0)).sum() < 0.1 * region.sum():
                    found = bounding_box(region)
                    assert found is not None
                    hard.append((k, found.cx, found.cy, max(found.side, least)))  # angle 0
            if (k + 1) % 100 == 0 or k + 1 == len(train_x):
                print(f"\rmining false regions: {k + 1}/{len(train_x)} photos", end="", flush=True)
    print(f"\n{len(hard)} false regions on the training photos", flush=True)
    return hard


def train_stage2(
    model: torch.nn.Module,
    train_x: np.ndarray,
    train_y: np.ndarray,
    boxes: np.ndarray,
    hard: list[tuple[int, float, float, float]],
    args: argparse.Namespace,
    rng: np.random.Generator,
    started: float,
) -> dict[str, Any]:
    """Train stage 2 on crops jittered around `boxes`, the true windows', until `args.minutes`
    after `started`; what it did."""
    import torch

    from wms.train.schedule import learning_rate

    images, masks = torch.from_numpy(train_x), torch.from_numpy(train_y)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    peak = 6e-3
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=1e-4)
    passes, seen, done = 0, 0, 0.0
    while done < 1:
        model.train()
        order = rng.permutation(len(images))
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size].copy()
            jitter = boxes[idx].copy()
            n = len(idx)
            for j in np.nonzero(rng.random(n) < args.negatives)[0]:
                if hard and rng.random() < 0.5:
                    photo, cx, cy, side = hard[rng.integers(len(hard))]
                    idx[j], jitter[j] = photo, (cx, cy, side, 0.0)
                else:  # anywhere, at a window's size
                    jitter[j] = (*rng.uniform(0.1, 0.9, 2) * SIDE, boxes[rng.integers(len(boxes)), 2], 0.0)
            jitter[:, 2] *= args.margin * np.exp(rng.uniform(-0.25, 0.25, n))  # side as stage 1 might box it
            jitter[:, :2] += rng.uniform(-0.12, 0.12, (n, 2)) * jitter[:, 2:3]
            # As stage 1's region would turn it: its long axis off by up to 15 degrees, and either
            # way round (a principal axis has no direction).
            angle = jitter[:, 3] + np.radians(rng.uniform(-15, 15, n))
            if args.align:
                angle += np.pi * (rng.random(n) < 0.5)
            theta = thetas(jitter[:, :3], angle, rng.random(n) < 0.5)
            xb, yb = crop(images[idx], masks[idx], theta, args.size)
            assert yb is not None
            xb = xb * torch.empty(n, 1, 1, 1).uniform_(0.8, 1.2) + torch.empty(n, 1, 1, 1).uniform_(-0.1, 0.1)
            done = (time.perf_counter() - started) / (args.minutes * 60)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(peak, done)
            loss = refine_loss(model(xb.contiguous(memory_format=torch.channels_last)), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += n
            if done >= 1:
                break
        passes += 1
        print(f"\rpass {passes}  loss {loss.item():.4f}  {done * 100:5.1f}%", end="", flush=True)
    minutes = (time.perf_counter() - started) / 60
    print(f"\nstage 2 trained: {passes} passes, {seen / (minutes * 60):.1f} crops/s", flush=True)
    return {
        "minutes": round(minutes, 2),
        "passes": passes,
        "size": args.size,
        "margin": args.margin,
        "align": args.align,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "crops_per_second": round(seen / (minutes * 60), 1),
        "negatives": args.negatives,
        "false_regions_mined": len(hard),
    }


def variants(
    refiner: Refiner,
    photos: np.ndarray,
    truths: np.ndarray,
    probs: list[np.ndarray],
    regions: int,
    least: float,
) -> dict[str, list[float]]:
    """Each photo's Dice, predicted each way.

    The crop around stage 1's largest region, or around all its regions (a larger crop, at
    fewer pixels per window, but one that keeps the window when a look-alike is larger), or
    whichever of these two answers has more probability mass (a look-alike far off makes
    the crop around all regions large and the window in it small), or
    twice: around all regions, then around the largest region of what stage 2 found there;
    or one crop around each region: the union of stage 2's masks, or the one with the most
    probability mass (stage 2 trained with negatives answers "nothing" on a look-alike).
    """
    from wms.train.metrics import dice

    scores: dict[str, list[float]] = {
        "stage 1": [],
        "stage 1, largest region": [],
        "stage 1 + 2": [],
        "stage 1 + 2, crop around all regions": [],
        "stage 1 + 2, the heavier of these two": [],
        "stage 1 + 2, all regions, then its largest": [],
        "stage 1 + 2, each region, union": [],
        "stage 1 + 2, each region, surest": [],
    }
    threshold = refiner.threshold
    for k, (image, truth, prob) in enumerate(zip(photos, truths, probs, strict=True)):
        true = truth[0]
        first = prob > threshold
        largest, wide, heavier = refiner.both(image, first)
        for variant, mask in [
            ("stage 1", first),
            ("stage 1, largest region", largest_region(first)),
            ("stage 1 + 2", largest),
            ("stage 1 + 2, crop around all regions", wide),
            ("stage 1 + 2, the heavier of these two", heavier),
        ]:
            scores[variant].append(dice(mask, true))
        # An empty answer falls back on the crop around the largest region, then on stage 1.
        wide = next((m for m in (wide, largest) if m.any()), first)
        twice = refiner.mask(image, refiner.locate(largest_region(wide)), wide)
        scores["stage 1 + 2, all regions, then its largest"].append(
            dice(twice if twice.any() else wide, true)
        )
        # Where stage 1 finds nothing, its likeliest place is still worth a look.
        seeds = first if first.any() else prob >= prob.max() / 2
        found_each = region_boxes(seeds, regions, least, refiner.align, refiner.elongated)
        each = [refiner.probabilities(image, found) for found in found_each]
        masks = [p > threshold for p in each]
        union = np.any(masks, axis=0) if any(m.any() for m in masks) else first
        mass = [float(p[m].sum()) for p, m in zip(each, masks, strict=True)]
        surest = masks[int(np.argmax(mass))] if masks and max(mass) > 0 else first
        scores["stage 1 + 2, each region, union"].append(dice(union, true))
        scores["stage 1 + 2, each region, surest"].append(dice(surest, true))
        print(f"\r{k + 1}/{len(photos)} photos", end="", flush=True)
    print()
    return scores


def sizes(text: str) -> list[int]:
    """'160,176,192' as a list of sides."""
    return [int(side) for side in text.split(",")]


def numbers(text: str) -> list[float]:
    """'1,1.5,2' as a list of numbers."""
    return [float(value) for value in text.split(",")]


def main() -> int:
    parser = saved_model_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=8.0, help="stage 2's training budget")
    parser.add_argument("--size", type=int, default=160, help="stage 2's input side in training, px")
    parser.add_argument(
        "--predict-sizes",
        type=sizes,
        default=[160, 176, 192],
        help="stage 2's input sides to try on the validation split; the best predicts the test split",
    )
    parser.add_argument(
        "--margin", type=float, default=1.4, help="crop side / the window's length (its longer side)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--negatives", type=float, default=0.0, help="share of crops around no window")
    parser.add_argument("--regions", type=int, default=4, help="at most this many crops per test photo")
    parser.add_argument(
        "--align", action="store_true", help="turn each crop with the window's long axis (stage 1's region's)"
    )
    parser.add_argument(
        "--elongated",
        type=numbers,
        default=[1.0, 2.0, 3.0],
        help="with --align, turn only crops around regions at least this many times longer than wide;"
        " the validation split chooses among these",
    )
    parser.add_argument(
        "--depth", type=int, default=0, help="stage 2's depth (default: stage 1's, as its whole network is)"
    )
    parser.add_argument("--tag", default="", help="added to the result files' names")
    parser.add_argument(
        "--reuse", action="store_true", help="stage 2 as the last run of NAME and --tag saved it"
    )
    args = parser.parse_args()
    folder = saved_model(args.data, args.work, args.name)
    if isinstance(folder, int):
        return folder

    import torch

    from wms.train.metrics import dice
    from wms.train.model import build_model, input_multiple
    from wms.train.segmenter import Segmenter

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    stage1 = Segmenter.load(folder)
    shape = stage1.spec.kwargs | ({"depth": args.depth} if args.depth else {})  # else as stage 1
    multiple = input_multiple(stage1.spec.architecture, **shape)
    if any(side % multiple for side in [args.size, *args.predict_sizes]):
        print(
            f"error: stage 2's sides must be multiples of {multiple} (its network's depth)", file=sys.stderr
        )
        return 2
    splits = real_splits(args.data, args.work)
    train_x, train_y = load(splits["train"])
    boxes = np.array([astuple(locate(m[0] > 0, args.align)) for m in train_y], dtype=np.float64)
    least = float(np.percentile(boxes[:, 2], 5))  # the smallest windows' side
    name = f"{args.name}-{args.tag}" if args.tag else args.name
    weights = args.work / f"crop-refine-stage2-{name}.pt"
    model = build_model(stage1.spec.architecture, **shape)
    if args.reuse and weights.exists():
        saved = torch.load(weights)
        model.load_state_dict(saved["state"])
        trained = saved["trained"]
        print(f"stage 2 from {weights.name}, trained {trained['minutes']} min", flush=True)
    else:
        print(f"stage 2: {len(train_x)} training photos, {args.minutes:g} min at {args.size} px", flush=True)
        started = time.perf_counter()
        hard = mine_false_regions(stage1, train_x, train_y, least) if args.negatives else []
        trained = train_stage2(model, train_x, train_y, boxes, hard, args, rng, started)
        torch.save({"state": model.state_dict(), "trained": trained}, weights)

    model.eval()
    threshold = stage1.spec.threshold
    # The input side stage 2 predicts at is chosen on the validation split, never the test one.
    val_x, val_y = load(splits["val"])
    val_probs = stage1_probabilities(stage1, val_x)
    test = splits["test"]
    test_x, test_y = load(test)
    test_probs = stage1_probabilities(stage1, test_x)

    def heavier_dice(
        size: int, elongated: float, photos: np.ndarray, truths: np.ndarray, probs: list
    ) -> float:
        refiner = Refiner(model, args.margin, size, threshold, args.align, elongated)
        found = [refiner.heavier(x, p) for x, p in zip(photos, probs, strict=True)]
        return round(float(np.mean([dice(m, y[0]) for m, y in zip(found, truths, strict=True)])), 4)

    # Where the validation split would choose between equal settings, the first listed wins.
    grid = [(size, e) for size in args.predict_sizes for e in (args.elongated if args.align else [1.0])]
    with torch.no_grad():
        by_setting = {f"{s} px, {e:g}": heavier_dice(s, e, val_x, val_y, val_probs) for s, e in grid}
        size, elongated = grid[int(np.argmax(list(by_setting.values())))]
        print(f"val Dice of the heavier crop by stage 2's input side, elongation to turn: {by_setting}")
        print(
            f"predicting at {size} px"
            + (f", turning regions at least {elongated:g}x longer than wide" if args.align else "")
        )
        # Shown beside the choice, never used for it.
        test_by_setting = {f"{s} px, {e:g}": heavier_dice(s, e, test_x, test_y, test_probs) for s, e in grid}
        print(f"the same on the test split: {test_by_setting}")
        refiner = Refiner(model, args.margin, size, threshold, args.align, elongated)
        scores = variants(refiner, test_x, test_y, test_probs, args.regions, least)
    rows = report(scores)
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": args.name,
        "stage2": {
            **trained,
            "regions_per_photo": args.regions,
            "predict_size": size,
            "aligned_from_elongation": elongated if args.align else None,
        },
        "val_dice_by_setting": by_setting,
        "test_dice_by_setting": test_by_setting,
        "test_images": len(test),
        "variants": rows,
    }
    target = REPO / "benchmarks" / "results" / f"crop-refine-{name}.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {target.relative_to(REPO)}")
    # Per-photo scores stay outside git, as quality.py's do (they name the real photos).
    with (args.work / f"crop-refine-scores-{name}.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)  # quotes "stage 1, largest region"
        writer.writerow(["id", *scores])
        writer.writerows([pair.id, *(f"{v[k]:.4f}" for v in scores.values())] for k, pair in enumerate(test))
    return 0 if all(math.isfinite(np.mean(values)) for values in scores.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
