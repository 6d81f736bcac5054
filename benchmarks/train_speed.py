"""Training throughput at 512 px: this loop (decode once, augment tensors in batches) vs a naive
loop that decodes and augments every sample from disk with Pillow each epoch. Same model, same
batches, side by side in one run.

    .venv/bin/python benchmarks/train_speed.py [--images 48] [--device auto]

Writes benchmarks/results/train_speed-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "water-meters"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--base-channels", type=int, default=8)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    if not (args.data / "images").is_dir():
        print(f"skipped: real data not found at {args.data}")
        return 0

    import numpy as np
    import torch
    from PIL import Image, ImageEnhance

    from wms.data.pairs import find_pairs
    from wms.data.prepare import prepare_dataset
    from wms.train.augment import augment
    from wms.train.cache import load_arrays
    from wms.train.loop import resolve_device
    from wms.train.losses import bce_dice as loss_fn
    from wms.train.model import UNet
    from wms.train.preprocess import image_to_array, mask_to_array, open_image, open_mask, scale

    size, bs = 512, args.batch_size
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "raw"
        for kind in ("images", "masks"):
            (subset / kind).mkdir(parents=True)
        for image in sorted((args.data / "images").iterdir())[: args.images]:
            (subset / "images" / image.name).symlink_to(image)
            (subset / "masks" / image.name).symlink_to(args.data / "masks" / image.name)
        prepare_dataset(subset, Path(tmp) / "prepared", size=size)
        pairs = find_pairs(Path(tmp) / "prepared").pairs

        def step(
            model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
        ) -> None:
            loss = loss_fn(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def fresh() -> tuple[torch.nn.Module, Any]:
            torch.manual_seed(0)
            model = UNet(args.base_channels, args.depth).to(device)
            return model, torch.optim.AdamW(model.parameters(), lr=1e-3)

        def naive_sample(i: int, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
            image, mask = open_image(pairs[i].image), open_mask(pairs[i].mask)
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            angle = rng.uniform(-10, 10)
            image = image.rotate(angle, Image.Resampling.BILINEAR)
            mask = mask.rotate(angle, Image.Resampling.NEAREST)
            image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.9, 1.1))
            image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
            return image_to_array(image, size), mask_to_array(mask, size)

        def naive_epoch() -> float:
            model, opt = fresh()
            rng = random.Random(0)
            sync()
            started = time.perf_counter()
            for i in range(0, len(pairs), bs):
                samples = [naive_sample(j, rng) for j in range(i, min(i + bs, len(pairs)))]
                x = torch.from_numpy(scale(np.stack([s[0] for s in samples])))
                y = torch.from_numpy(np.stack([s[1] for s in samples]))[:, None].float()
                step(model, opt, x, y)
            sync()
            return time.perf_counter() - started

        def cached_epoch(x_all: np.ndarray, y_all: np.ndarray) -> float:
            model, opt = fresh()
            gen = torch.Generator().manual_seed(0)
            sync()
            started = time.perf_counter()
            for i in range(0, len(pairs), bs):
                idx = np.arange(i, min(i + bs, len(pairs)))
                x = torch.from_numpy(scale(np.asarray(x_all[idx]))).to(device)
                y = torch.from_numpy(np.asarray(y_all[idx]))[:, None].float().to(device)
                x, y = augment(x, y, gen, 10.0)
                step(model, opt, x, y)
            sync()
            return time.perf_counter() - started

        def sync() -> None:
            if device == "cuda":
                torch.cuda.synchronize()

        cache = Path(tmp) / "cache"
        started = time.perf_counter()
        x_all, y_all = load_arrays(pairs, size, cache)
        decode_once = time.perf_counter() - started
        cached_epoch(x_all, y_all)  # warm-up: allocator, kernels
        naive = naive_epoch()
        cached = cached_epoch(x_all, y_all)

    n = len(pairs)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device,
        "images": n,
        "size": size,
        "model": {"base_channels": args.base_channels, "depth": args.depth, "batch_size": bs},
        "naive_images_per_s": round(n / naive, 2),
        "this_loop_images_per_s": round(n / cached, 2),
        "speedup": round(naive / cached, 2),
        "decode_once_seconds": round(decode_once, 2),
    }
    print(json.dumps(result, indent=2))
    out = REPO / "benchmarks" / "results" / f"train_speed-{device}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
