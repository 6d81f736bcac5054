"""Would a second stage lift the test scores? Crop-and-refine on top of a saved quality model.

    .venv/bin/python benchmarks/quality.py --recipe cpu --seed 1 --tag idle   # saves the model
    .venv/bin/python benchmarks/crop_refine.py cpu-idle-seed1 --minutes 8

Stage 1 is the saved model: it finds the window in the whole photo, shrunk to its image_size
(192 px for the `cpu` recipe: a window ~45x16 px). Stage 2, trained here for `--minutes` on the
training split, sees a square crop of the 512 px photo around the window, `--margin` times the
window's longer side, resized to `--size` px: the window at about twice the pixels. It learns
on crops around the true window, jittered in place, size and angle as stage 1's boxes would be.
It predicts on a crop around stage 1's largest region, or around all its regions, or first
around all regions and then around the largest region it found there; its mask replaces
stage 1's (an empty answer falls back on the narrower crop, then on stage 1). It predicts at
the input side of `--predict-sizes` that scores best on the validation split: a crop resized
to 176 px instead of 160 shows the window 10% larger than training did on average, within
its jitter (on `cpu-stage1-20`, seeds 1 and 2: test Dice 0.901 and 0.902 against 0.891 and 0.899;
stage 2 trained once more on seed 1, `-again`: 0.891 against 0.888).

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
Not a recipe: the quality target's 30 minutes would have to hold both stages.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from quality import REPO, real_splits
from scipy import ndimage
from tail_variants import largest_region, saved_model, saved_model_parser
from tta_effect import report

if TYPE_CHECKING:
    import torch

SIDE = 512  # the prepared photos' side


def load(pairs: list) -> tuple[np.ndarray, np.ndarray]:
    from wms.train.preprocess import mask_to_array, open_image, open_mask

    images = np.stack([np.asarray(open_image(p.image), dtype=np.uint8).transpose(2, 0, 1) for p in pairs])
    masks = np.stack([mask_to_array(open_mask(p.mask))[None] for p in pairs])
    return images, masks


def box(mask: np.ndarray) -> tuple[float, float, float] | None:
    """Centre x, centre y and longer side (pixels) of a mask's bounding box; None when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return (x0 + x1) / 2, (y0 + y1) / 2, float(max(x1 - x0, y1 - y0))


def region_boxes(mask: np.ndarray, keep: int, least: float) -> list[tuple[float, float, float]]:
    """Boxes of a mask's `keep` largest regions, largest first; a side is at least `least` px."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return []
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    boxes = []
    for i in np.argsort(sizes)[::-1][:keep]:
        found = box(labels == 1 + int(i))
        assert found is not None  # a label's region is never empty
        boxes.append((found[0], found[1], max(found[2], least)))
    return boxes


def refine_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE on every crop, soft Dice only on the crops that hold some window.

    `bce_dice` on a crop with no window would push stage 2 to answer less everywhere, windows
    included (measured: test Dice 0.830 against 0.875 with `--negatives 0.3`).
    """
    import torch.nn.functional as F

    from wms.train.losses import soft_dice

    bce = F.binary_cross_entropy_with_logits(logits, target)
    held = target.flatten(1).sum(dim=1) > 0
    return bce + (1 - soft_dice(logits[held], target[held])).sum() / max(int(held.sum()), 1)


def thetas(boxes: np.ndarray, angle: np.ndarray, flip: np.ndarray) -> torch.Tensor:
    """Affine grids' matrices: crop (u, v) in [-1, 1] to photo coordinates, turned and mirrored."""
    import torch

    cx, cy, side = boxes[:, 0], boxes[:, 1], boxes[:, 2]
    a = side / SIDE  # half the crop's side in normalised units (the photo spans 2)
    cos, sin = np.cos(angle), np.sin(angle)
    m = np.where(flip, -1.0, 1.0)
    rows = [
        [a * cos * m, -a * sin, cx / SIDE * 2 - 1],
        [a * sin * m, a * cos, cy / SIDE * 2 - 1],
    ]
    return torch.tensor(np.stack([np.stack(r, axis=-1) for r in rows], axis=1), dtype=torch.float32)


def crop(
    images: torch.Tensor, masks: torch.Tensor | None, theta: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    import torch.nn.functional as F

    grid = F.affine_grid(theta, [len(theta), 3, size, size], align_corners=False)
    x = F.grid_sample(images.float() / 255, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = None
    if masks is not None:
        y = (F.grid_sample(masks.float(), grid, mode="bilinear", align_corners=False) > 0.5).float()
    return x, y


def mine_false_regions(
    stage1: Any, train_x: np.ndarray, train_y: np.ndarray, least: float
) -> list[tuple[int, float, float, float]]:
    """(photo, cx, cy, side) of stage 1's regions on the training photos that miss the window."""
    import torch
    from PIL import Image

    hard = []
    with torch.no_grad():
        for k in range(len(train_x)):
            prob = stage1.probability_maps([Image.fromarray(train_x[k].transpose(1, 2, 0))])[0]
            labels, count = ndimage.label(prob > stage1.spec.threshold)
            for r in range(1, count + 1):
                region = labels == r
                if (region & (train_y[k, 0] > 0)).sum() < 0.1 * region.sum():
                    found = box(region)
                    assert found is not None
                    hard.append((k, found[0], found[1], max(found[2], least)))
            if (k + 1) % 100 == 0 or k + 1 == len(train_x):
                print(f"\rmining false regions: {k + 1}/{len(train_x)} photos", end="", flush=True)
    print(f"\n{len(hard)} false regions on the training photos", flush=True)
    return hard


def train_stage2(
    model: torch.nn.Module,
    train_x: np.ndarray,
    train_y: np.ndarray,
    hard: list[tuple[int, float, float, float]],
    args: argparse.Namespace,
    rng: np.random.Generator,
    started: float,
) -> dict[str, Any]:
    """Train stage 2 on jittered crops until `args.minutes` after `started`; what it did."""
    import torch

    from wms.train.loop import learning_rate

    images, masks = torch.from_numpy(train_x), torch.from_numpy(train_y)
    boxes = np.array([box(m[0]) for m in train_y], dtype=np.float64)
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
                    idx[j], jitter[j] = photo, (cx, cy, side)
                else:  # anywhere, at a window's size
                    jitter[j] = (*rng.uniform(0.1, 0.9, 2) * SIDE, boxes[rng.integers(len(boxes)), 2])
            jitter[:, 2] *= args.margin * np.exp(rng.uniform(-0.25, 0.25, n))  # side as stage 1 might box it
            jitter[:, :2] += rng.uniform(-0.12, 0.12, (n, 2)) * jitter[:, 2:3]
            angle = np.radians(rng.uniform(-15, 15, n))
            xb, yb = crop(images[idx], masks[idx], thetas(jitter, angle, rng.random(n) < 0.5), args.size)
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
        "batch_size": args.batch_size,
        "seed": args.seed,
        "crops_per_second": round(seen / (minutes * 60), 1),
        "negatives": args.negatives,
        "false_regions_mined": len(hard),
    }


def stage1_probabilities(stage1: Any, photos: np.ndarray) -> list[np.ndarray]:
    """Stage 1's probability map of each photo (3, 512, 512), as it decoded, not read again."""
    from PIL import Image

    return [stage1.probability_maps([Image.fromarray(x.transpose(1, 2, 0))])[0] for x in photos]


class Refiner:
    """Stage 2 on crops of a photo: `margin` times a box's side, resized to `size` px."""

    def __init__(self, model: torch.nn.Module, margin: float, size: int, threshold: float) -> None:
        self.model, self.margin, self.size, self.threshold = model, margin, size, threshold

    def probabilities(self, image: np.ndarray, found: tuple[float, float, float]) -> np.ndarray:
        """Stage 2's probabilities on one photo (3, 512, 512) from the crop around `found`."""
        import torch
        import torch.nn.functional as F

        cx, cy, side = found
        crop_box = np.array([[cx, cy, side * self.margin]])
        theta = thetas(crop_box, np.zeros(1), np.zeros(1, dtype=bool))
        x, _ = crop(torch.from_numpy(image[None]), None, theta, self.size)
        logits = (self.model(x) + self.model(x.flip(-1)).flip(-1)) / 2  # flip TTA, as stage 1 has
        # Back onto the photo: the inverse of the crop's affine map, zeros outside the crop.
        a = crop_box[0, 2] / SIDE
        ox, oy = crop_box[0, 0] / SIDE * 2 - 1, crop_box[0, 1] / SIDE * 2 - 1
        inverse = torch.tensor([[[1 / a, 0, -ox / a], [0, 1 / a, -oy / a]]], dtype=torch.float32)
        grid = F.affine_grid(inverse, [1, 1, SIDE, SIDE], align_corners=False)
        back = F.grid_sample(torch.sigmoid(logits), grid, mode="bilinear", align_corners=False)
        return np.asarray(back[0, 0].numpy())

    def mask(
        self, image: np.ndarray, found: tuple[float, float, float] | None, fallback: np.ndarray
    ) -> np.ndarray:
        """Stage 2's mask from the crop around `found`; `fallback` where there is no box."""
        return fallback if found is None else self.probabilities(image, found) > self.threshold

    def around_all(self, image: np.ndarray, prob: np.ndarray) -> np.ndarray:
        """Stage 2's mask from one crop around all of stage 1's regions."""
        first = prob > self.threshold
        return self.mask(image, box(first), first)


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
        "stage 1 + 2, all regions, then its largest": [],
        "stage 1 + 2, each region, union": [],
        "stage 1 + 2, each region, surest": [],
    }
    threshold = refiner.threshold
    for k, (image, truth, prob) in enumerate(zip(photos, truths, probs, strict=True)):
        true = truth[0]
        first = prob > threshold
        region = largest_region(first)
        largest, wide = refiner.mask(image, box(region), first), refiner.around_all(image, prob)
        for variant, mask in [
            ("stage 1", first),
            ("stage 1, largest region", region),
            ("stage 1 + 2", largest),
            ("stage 1 + 2, crop around all regions", wide),
        ]:
            scores[variant].append(dice(mask, true))
        # An empty answer falls back on the crop around the largest region, then on stage 1.
        wide = next((m for m in (wide, largest) if m.any()), first)
        twice = refiner.mask(image, box(largest_region(wide)), wide)
        scores["stage 1 + 2, all regions, then its largest"].append(
            dice(twice if twice.any() else wide, true)
        )
        # Where stage 1 finds nothing, its likeliest place is still worth a look.
        seeds = first if first.any() else prob >= prob.max() / 2
        each = [refiner.probabilities(image, found) for found in region_boxes(seeds, regions, least)]
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
    parser.add_argument("--margin", type=float, default=1.4, help="crop side / the window's longer side")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--negatives", type=float, default=0.0, help="share of crops around no window")
    parser.add_argument("--regions", type=int, default=4, help="at most this many crops per test photo")
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
    from wms.train.model import build_model
    from wms.train.segmenter import Segmenter

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    stage1 = Segmenter.load(folder)
    splits = real_splits(args.data, args.work)
    train_x, train_y = load(splits["train"])
    boxes = np.array([box(m[0]) for m in train_y], dtype=np.float64)
    least = float(np.percentile(boxes[:, 2], 5))  # the smallest windows' side
    name = f"{args.name}-{args.tag}" if args.tag else args.name
    weights = args.work / f"crop-refine-stage2-{name}.pt"
    model = build_model(stage1.spec.architecture, **stage1.spec.kwargs)
    if args.reuse and weights.exists():
        saved = torch.load(weights)
        model.load_state_dict(saved["state"])
        trained = saved["trained"]
        print(f"stage 2 from {weights.name}, trained {trained['minutes']} min", flush=True)
    else:
        print(f"stage 2: {len(train_x)} training photos, {args.minutes:g} min at {args.size} px", flush=True)
        started = time.perf_counter()
        hard = mine_false_regions(stage1, train_x, train_y, least) if args.negatives else []
        trained = train_stage2(model, train_x, train_y, hard, args, rng, started)
        torch.save({"state": model.state_dict(), "trained": trained}, weights)

    model.eval()
    threshold = stage1.spec.threshold
    # The input side stage 2 predicts at is chosen on the validation split, never the test one.
    val_x, val_y = load(splits["val"])
    val_probs = stage1_probabilities(stage1, val_x)
    test = splits["test"]
    test_x, test_y = load(test)
    test_probs = stage1_probabilities(stage1, test_x)

    def around_all_dice(size: int, photos: np.ndarray, truths: np.ndarray, probs: list[np.ndarray]) -> float:
        refiner = Refiner(model, args.margin, size, threshold)
        found = [refiner.around_all(x, p) for x, p in zip(photos, probs, strict=True)]
        return round(float(np.mean([dice(m, y[0]) for m, y in zip(found, truths, strict=True)])), 4)

    with torch.no_grad():
        by_size = {size: around_all_dice(size, val_x, val_y, val_probs) for size in args.predict_sizes}
        size = max(by_size, key=lambda s: by_size[s])
        print(f"val Dice around all regions by stage 2's input side: {by_size}; predicting at {size} px")
        # Shown beside the choice, never used for it.
        test_by_size = {
            side: around_all_dice(side, test_x, test_y, test_probs) for side in args.predict_sizes
        }
        print(f"the same on the test split: {test_by_size}")
        refiner = Refiner(model, args.margin, size, threshold)
        scores = variants(refiner, test_x, test_y, test_probs, args.regions, least)
    rows = report(scores)
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": args.name,
        "stage2": {**trained, "regions_per_photo": args.regions, "predict_size": size},
        "val_dice_by_predict_size": by_size,
        "test_dice_by_predict_size": test_by_size,
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
