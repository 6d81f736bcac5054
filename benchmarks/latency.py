"""Saved-model size and CPU latency for one 512x512 photo: PyTorch eager next to ONNX Runtime.

Run: .venv/bin/python benchmarks/latency.py [--runs 30] [--sizes 128 512] [--arch 8x4] [--tta]
     .venv/bin/python benchmarks/latency.py --arch 8x4 --sizes 192 --tta   # the cpu recipe's model,
                                                                           # without and with train.tta

For each U-Net (base_channels 16 / depth 3, the default, and 32 / 4) and each model input
size, the model is saved (`model.pt`) and exported (`model.onnx`), then both runtimes predict
the same photo with the same number of threads, each timed in blocks that take turns (3 rounds,
a warm-up before every block) so drifting load from other work hits both alike; medians are
reported. Weights are a seeded random initialisation: latency and size do not depend on
training. Two timings per runtime: `network` (the preprocessed batch through the model and
sigmoid) and `predict` (`predict_masks` on a PIL image: resize, network, upsampling to
512x512, threshold).
Results go to benchmarks/results/latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from PIL import Image

from wms.train.export import OnnxSegmenter, export_onnx
from wms.train.model import build_model
from wms.train.preprocess import image_to_array
from wms.train.segmenter import ONNX_FILE, WEIGHTS_FILE, ModelSpec, Segmenter

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "latency.json"  # latency-tta.json with --tta
ARCHITECTURES = [{"base_channels": 16, "depth": 3}, {"base_channels": 32, "depth": 4}]
PHOTO = 512
WARMUP = 3  # calls before each block
ROUNDS = 3


def _photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (PHOTO, PHOTO, 3), dtype=np.uint8), "RGB")


def _in_blocks(calls: dict[str, Callable[[], Any]], runs: int) -> dict[str, list[float]]:
    """Seconds per call: each runtime timed in its own blocks, the blocks taking turns.

    Not call by call: both runtimes' idle threads spin for a while after a call (ONNX Runtime's
    thread pool and OpenMP), which slowed the other runtime 1.5-2x when calls alternated.
    The warm-up before each block absorbs that; the rounds spread drifting machine load.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    per_block = max(1, runs // ROUNDS)
    for _ in range(ROUNDS):
        for name, call in calls.items():
            for _ in range(WARMUP):
                call()
            for _ in range(per_block):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return times


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(1000 * statistics.median(ordered), 2),
        "p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 2),
        "min_ms": round(1000 * ordered[0], 2),
    }


def bench(
    arch: dict[str, int], size: int, runs: int, threads: int, folder: Path, tta: bool = False
) -> dict[str, Any]:
    """Sizes and latencies of one architecture at one model input size (with flip TTA or not)."""
    torch.manual_seed(0)
    spec = ModelSpec(architecture="unet", image_size=size, threshold=0.5, kwargs=arch, tta=tta)
    segmenter = Segmenter(build_model("unet", **arch), spec)
    segmenter.save(folder)
    export_onnx(segmenter, folder / ONNX_FILE)
    onnx = OnnxSegmenter.load(folder, threads=threads)

    photo = _photo()
    batch = image_to_array(photo, size)[None]
    agreement = float((segmenter.predict_masks([photo])[0] == onnx.predict_masks([photo])[0]).mean())
    times = _in_blocks(
        {
            "torch_network": lambda: segmenter.probabilities(batch),
            "onnx_network": lambda: onnx.probabilities(batch),
            "torch_predict": lambda: segmenter.predict_masks([photo]),
            "onnx_predict": lambda: onnx.predict_masks([photo]),
        },
        runs,
    )
    stats = {name: _ms(values) for name, values in times.items()}
    return {
        **arch,
        "image_size": size,
        "tta": tta,
        "model_pt_bytes": (folder / WEIGHTS_FILE).stat().st_size,
        "model_onnx_bytes": (folder / ONNX_FILE).stat().st_size,
        "mask_agreement": round(agreement, 6),
        **stats,
        "speedup_network": round(stats["torch_network"]["median_ms"] / stats["onnx_network"]["median_ms"], 2),
        "speedup_predict": round(stats["torch_predict"]["median_ms"] / stats["onnx_predict"]["median_ms"], 2),
    }


def _line(row: dict[str, Any]) -> str:
    mb = f"pt {row['model_pt_bytes'] / 1e6:6.2f} MB  onnx {row['model_onnx_bytes'] / 1e6:6.2f} MB"
    tta = " tta" if row["tta"] else ""
    parts = [f"unet b{row['base_channels']} d{row['depth']} @{row['image_size']:>4}{tta}: {mb}"]
    for what in ("network", "predict"):
        torch_ms, onnx_ms = row[f"torch_{what}"]["median_ms"], row[f"onnx_{what}"]["median_ms"]
        parts.append(f"{what} torch {torch_ms:8.2f} ms  onnx {onnx_ms:8.2f} ms ({row[f'speedup_{what}']}x)")
    return " | ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per runtime, after warm-up")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[128, 512], help="model input sizes (128 is the default)"
    )
    parser.add_argument(
        "--arch",
        action="append",
        default=[],
        metavar="BxD",
        help="a U-Net of base_channels B and depth D (repeatable; default: 16x3 and 32x4)",
    )
    parser.add_argument("--tta", action="store_true", help="time each model also with flip TTA (train.tta)")
    args = parser.parse_args()
    architectures = [
        {"base_channels": int(b), "depth": int(d)} for b, d in (a.split("x") for a in args.arch)
    ] or ARCHITECTURES
    threads = torch.get_num_threads()
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="wms-latency-") as tmp:
        for arch in architectures:
            for size in args.sizes:
                for tta in (False, True) if args.tta else (False,):
                    folder = Path(tmp) / f"b{arch['base_channels']}-d{arch['depth']}-s{size}-tta{int(tta)}"
                    row = bench(arch, size, args.runs, threads, folder, tta)
                    rows.append(row)
                    print(_line(row))
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "photo": f"{PHOTO}x{PHOTO}",
        "runs": ROUNDS * max(1, args.runs // ROUNDS),
        "rounds": ROUNDS,
        "warmup_per_block": WARMUP,
        "threads": threads,
        "cpus": os.cpu_count(),
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "results": rows,
    }
    target = RESULTS.with_name("latency-tta.json") if args.tta else RESULTS
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{threads} thread(s) each, median of {args.runs}; 1-min load average "
        f"{result['load_average_1min']['before']} -> {result['load_average_1min']['after']}; "
        f"written to {target.relative_to(REPO)}"
    )


if __name__ == "__main__":
    main()
