"""Peak memory of `wms serve` per photo: what the chart's memory limit has to hold.

Run: .venv/bin/python benchmarks/serve_memory.py [--megapixels 10 20 40] [--model default|gpu]

Each case starts a fresh `wms serve` process (the CLI, as the pod runs it) on the default
[train] model or the gpu recipe's (512 px, base 32, depth 4: what the workflows train and
deploy), with seeded random weights (memory does not depend on training), reads its peak
resident memory (VmHWM in /proc) once it is ready, posts JPEG photos of the given size (one,
or two at once), and reads VmHWM again. The growth per photo pixel is the slope between sizes;
the chart test (tests/test_infrastructure_memory.py) uses it; `rss_mb` is what the server holds
half a second after the photos are answered. Results go to benchmarks/results/serve_memory[_gpu].json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_latency import _free_port, wait_ready

RESULTS = Path(__file__).resolve().parent / "results"
SRC = Path(__file__).resolve().parents[1] / "src"
# image_size and U-Net arguments: the default [train] model, and the gpu recipe's (wms.train.recipes)
MODELS = {
    "default": (128, {"base_channels": 16, "depth": 3}),
    "gpu": (512, {"base_channels": 32, "depth": 4}),
}


class WmsServe:
    """`wms serve --model FOLDER` in its own process, on a free loopback port (`settings`: more
    WMS_* variables for it)."""

    def __init__(self, folder: Path, workdir: Path, settings: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        code = "from wms.cli.main import run; run()"
        args = [sys.executable, "-c", code, "serve", "--model", str(folder), "--port", str(self.port)]
        env = {
            **os.environ,
            "WMS_SERVE__MAX_CONCURRENCY": "2",
            "WMS_SERVE__INTRA_OP_THREADS": "1",
            **(settings or {}),
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))  # this checkout
        self.proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=subprocess.DEVNULL)
        wait_ready(self.url, self.proc, "wms serve")

    def peak_mb(self, field: str = "VmHWM") -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _photo(megapixels: float) -> tuple[bytes, int]:
    """A synthetic meter photo enlarged to about `megapixels` (4:3), as a JPEG; and its pixel count."""
    from PIL import Image

    from wms.data.synth import synth_pair

    width = int((megapixels * 1e6 * 4 / 3) ** 0.5) // 16 * 16
    height = int(megapixels * 1e6 / width)
    image = synth_pair(seed=11, index=0, size=512)[0].resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue(), width * height


def _case(folder: Path, workdir: Path, photo: bytes, at_once: int) -> dict[str, float]:
    server = WmsServe(folder, workdir)
    try:
        base = server.peak_mb()

        def post(_: int) -> None:
            answer = httpx.post(f"{server.url}/predict", files={"file": ("m.jpg", photo)}, timeout=300)
            answer.raise_for_status()

        with ThreadPoolExecutor(at_once) as pool:
            list(pool.map(post, range(at_once)))
        time.sleep(0.5)  # the server gives freed memory back just after the last answer (wms.serve.heap)
        peak, rss = server.peak_mb(), server.peak_mb("VmRSS")
        return {"base_mb": round(base, 1), "peak_mb": round(peak, 1), "rss_mb": round(rss, 1)}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, nargs="+", default=[10, 20, 40])
    parser.add_argument("--model", choices=list(MODELS), default="default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, workdir = Path(tmp) / "model", Path(tmp) / "work"
        folder.mkdir()
        workdir.mkdir()
        _model(folder, *MODELS[args.model])
        cases = []
        for mp in args.megapixels:
            photo, pixels = _photo(min(mp, 39.9))
            for at_once in (1, 2):
                result = _case(folder, workdir, photo, at_once)
                row = {"pixels": pixels, "jpeg_mb": round(len(photo) / 2**20, 2), "at_once": at_once}
                row |= result
                print(json.dumps(row), flush=True)
                cases.append(row)
    singles = sorted((c for c in cases if c["at_once"] == 1), key=lambda c: c["pixels"])
    low, high = singles[0], singles[-1]
    slope = (high["peak_mb"] - low["peak_mb"]) * 2**20 / (high["pixels"] - low["pixels"])
    pair = next(c for c in cases if c["at_once"] == 2 and c["pixels"] == high["pixels"])
    each = (pair["peak_mb"] - pair["base_mb"]) * 2**20 / (2 * pair["pixels"])
    summary = {"bytes_per_pixel": round(slope, 1), "bytes_per_pixel_two_at_once": round(each, 1)}
    print(json.dumps(summary))
    RESULTS.mkdir(exist_ok=True)
    record = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": args.model,
        "machine": platform.platform(),
        "python": platform.python_version(),
        "cases": cases,
        **summary,
    }
    suffix = "" if args.model == "default" else f"_{args.model}"
    (RESULTS / f"serve_memory{suffix}.json").write_text(json.dumps(record, indent=2) + "\n")


def _model(folder: Path, size: int, arch: dict[str, int]) -> None:
    """A U-Net with seeded random weights, exported to ONNX, with a card so the server verifies it."""
    import hashlib

    import torch

    from wms.serve.model import ModelCard
    from wms.train.export import export_onnx
    from wms.train.model import build_model
    from wms.train.segmenter import ONNX_FILE, ModelSpec, Segmenter

    torch.manual_seed(0)
    segmenter = Segmenter(build_model("unet", **arch), ModelSpec("unet", size, 0.5, kwargs=arch))
    segmenter.save(folder)
    export_onnx(segmenter, folder / ONNX_FILE)
    sha = hashlib.sha256((folder / ONNX_FILE).read_bytes()).hexdigest()
    ModelCard(version=f"bench-{size}", onnx_sha256=sha).write(folder)


if __name__ == "__main__":
    main()
