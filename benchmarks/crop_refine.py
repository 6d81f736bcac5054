"""Would a second stage lift the test scores? Crop-and-refine on top of a saved quality model.

    .venv/bin/python benchmarks/quality.py --recipe cpu --seed 1 --tag idle   # saves the model
    .venv/bin/python benchmarks/crop_refine.py cpu-idle-seed1 --minutes 8

Stage 1 is the saved model: it finds the window in the whole photo, shrunk to its image_size
(192 px for the `cpu` recipe: a window ~45x16 px). Stage 2, trained here for `--minutes` on the
training split, sees a square crop of the 512 px photo around the window, `--margin` times the
window's longer side, resized to `--size` px: the window at about twice the pixels. It learns
on crops around the true window, jittered in place, size and angle as stage 1's boxes would be;
it predicts on the crop around stage 1's largest region, and its mask replaces stage 1's.
A photo stage 1 misses stays missed (the crop is around the wrong thing): this measures
how much the body of the scores can rise, not the tail.

Writes benchmarks/results/crop-refine-NAME.json: test Dice (mean, median, < 0.5, < 0.8) of
stage 1 alone, its largest region, and stage 1 + 2; stage 2's training minutes and passes
(per-photo scores: benchmarks/.work/crop-refine-scores-NAME.csv).
Not a recipe: the quality target's 30 minutes would have to hold both stages.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
from quality import REPO, real_splits
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


def main() -> int:
    parser = saved_model_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=8.0, help="stage 2's training budget")
    parser.add_argument("--size", type=int, default=128, help="stage 2's input side, px")
    parser.add_argument("--margin", type=float, default=1.6, help="crop side / the window's longer side")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    folder = saved_model(args.data, args.work, args.name)
    if isinstance(folder, int):
        return folder

    import torch
    import torch.nn.functional as F
    from PIL import Image

    from wms.train.loop import learning_rate
    from wms.train.losses import bce_dice
    from wms.train.metrics import dice
    from wms.train.model import build_model
    from wms.train.segmenter import Segmenter

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    stage1 = Segmenter.load(folder)
    splits = real_splits(args.data, args.work)
    train_x, train_y = load(splits["train"])
    boxes = np.array([box(m[0]) for m in train_y], dtype=np.float64)
    images, masks = torch.from_numpy(train_x), torch.from_numpy(train_y)
    print(f"stage 2: {len(images)} training photos, {args.minutes:g} min at {args.size} px", flush=True)

    model = build_model(stage1.spec.architecture, **stage1.spec.kwargs)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    peak = 6e-3
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=1e-4)
    started, passes, seen = time.perf_counter(), 0, 0
    done = 0.0
    while done < 1:
        model.train()
        order = rng.permutation(len(images))
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            jitter = boxes[idx].copy()
            n = len(idx)
            jitter[:, 2] *= args.margin * np.exp(rng.uniform(-0.25, 0.25, n))  # side as stage 1 might box it
            jitter[:, :2] += rng.uniform(-0.12, 0.12, (n, 2)) * jitter[:, 2:3]
            angle = np.radians(rng.uniform(-15, 15, n))
            xb, yb = crop(images[idx], masks[idx], thetas(jitter, angle, rng.random(n) < 0.5), args.size)
            assert yb is not None
            xb = xb * torch.empty(n, 1, 1, 1).uniform_(0.8, 1.2) + torch.empty(n, 1, 1, 1).uniform_(-0.1, 0.1)
            done = (time.perf_counter() - started) / (args.minutes * 60)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(peak, done)
            loss = bce_dice(model(xb.contiguous(memory_format=torch.channels_last)), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += n
            if done >= 1:
                break
        passes += 1
        print(f"\rpass {passes}  loss {loss.item():.4f}  {done * 100:5.1f}%", end="", flush=True)
    train_minutes = (time.perf_counter() - started) / 60
    print(f"\nstage 2 trained: {passes} passes, {seen / (train_minutes * 60):.1f} crops/s", flush=True)

    model.eval()
    test = splits["test"]
    test_x, test_y = load(test)
    threshold = stage1.spec.threshold

    def refined(image: np.ndarray, found: tuple[float, float, float]) -> np.ndarray:
        """Stage 2's mask of one photo (3, 512, 512) on the crop around `found`."""
        cx, cy, side = found
        crop_box = np.array([[cx, cy, side * args.margin]])
        theta = thetas(crop_box, np.zeros(1), np.zeros(1, dtype=bool))
        x, _ = crop(torch.from_numpy(image[None]), None, theta, args.size)
        logits = (model(x) + model(x.flip(-1)).flip(-1)) / 2  # flip TTA, as stage 1 has
        # Back onto the photo: the inverse of the crop's affine map, zeros outside the crop.
        a = crop_box[0, 2] / SIDE
        ox, oy = crop_box[0, 0] / SIDE * 2 - 1, crop_box[0, 1] / SIDE * 2 - 1
        inverse = torch.tensor([[[1 / a, 0, -ox / a], [0, 1 / a, -oy / a]]], dtype=torch.float32)
        grid = F.affine_grid(inverse, [1, 1, SIDE, SIDE], align_corners=False)
        back = F.grid_sample(torch.sigmoid(logits), grid, mode="bilinear", align_corners=False)
        return np.asarray(back[0, 0].numpy() > threshold)

    # The crop around stage 1's largest region, or around all its regions (a larger crop, at
    # fewer pixels per window, but one that keeps the window when a look-alike is larger).
    scores: dict[str, list[float]] = {
        "stage 1": [],
        "stage 1, largest region": [],
        "stage 1 + 2": [],
        "stage 1 + 2, crop around all regions": [],
    }
    with torch.no_grad():
        for k in range(len(test)):
            # The photo as load() decoded it, not read a second time.
            prob = stage1.probability_maps([Image.fromarray(test_x[k].transpose(1, 2, 0))])[0]
            true = test_y[k, 0]
            first = prob > threshold
            region = largest_region(first)
            scores["stage 1"].append(dice(first, true))
            scores["stage 1, largest region"].append(dice(region, true))
            crops = {"stage 1 + 2": box(region), "stage 1 + 2, crop around all regions": box(first)}
            for name, found in crops.items():
                mask = first if found is None else refined(test_x[k], found)
                scores[name].append(dice(mask, true))
            print(f"\r{k + 1}/{len(test)} photos", end="", flush=True)
    print()
    rows = report(scores)
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": args.name,
        "stage2": {
            "minutes": round(train_minutes, 2),
            "passes": passes,
            "size": args.size,
            "margin": args.margin,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "crops_per_second": round(seen / (train_minutes * 60), 1),
        },
        "test_images": len(test),
        "variants": rows,
    }
    target = REPO / "benchmarks" / "results" / f"crop-refine-{args.name}.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {target.relative_to(REPO)}")
    # Per-photo scores stay outside git, as quality.py's do (they name the real photos).
    with (args.work / f"crop-refine-scores-{args.name}.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)  # quotes "stage 1, largest region"
        writer.writerow(["id", *scores])
        writer.writerows([pair.id, *(f"{v[k]:.4f}" for v in scores.values())] for k, pair in enumerate(test))
    return 0 if all(math.isfinite(np.mean(values)) for values in scores.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
