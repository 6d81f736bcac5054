"""Serving speed over HTTP: ONNX Runtime next to PyTorch eager, and a bounded load test.

Run: .venv/bin/python benchmarks/serve_latency.py [--runs 100] [--seconds 30] [--clients 8]

Both runtimes are served the same way: the same FastAPI app (wms.serve.app.create_app) in its
own `uvicorn` process with the same [serve] settings; only the segmenter inside differs
(OnnxSegmenter, or the PyTorch Segmenter in eager mode). A client posts one 512x512 JPEG photo
and times the whole request (upload, decode, model, mask PNG, response). The two servers are
timed in alternating blocks after a warm-up, so drifting load from other work hits both alike.
Then the ONNX server takes `--clients` concurrent clients for `--seconds`: requests/s, latency
percentiles, failed requests, and the server's peak resident memory (VmHWM).
Weights are a seeded random initialisation: speed does not depend on training.
Results go to benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "serve.json"
ARCH = {"base_channels": 16, "depth": 3}  # the default [train] model
PHOTO = 512
ROUNDS, WARMUP = 4, 5


def _serve(runtime: str, folder: str, port: int, threads: int, concurrency: int) -> None:
    """Child mode: serve `folder` with one runtime on 127.0.0.1:port."""
    import uvicorn

    from wms.config import ServeSettings
    from wms.serve.app import create_app
    from wms.serve.model import ModelCard, ServedModel, load_folder

    settings = ServeSettings(intra_op_threads=threads, max_concurrency=concurrency)
    if runtime == "onnx":
        served = load_folder(Path(folder), threads=threads)
    else:
        import torch

        from wms.train.segmenter import Segmenter

        torch.set_num_threads(threads)
        card = ModelCard(version="torch-eager", onnx_sha256="")
        served = ServedModel(Segmenter.load(Path(folder)), card, verified=False)  # type: ignore[arg-type]
    uvicorn.run(create_app(served, settings), host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 120) -> None:
    """Until `url`/ready answers 200; fails if the server's process ends or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, f"{what} did not start"
        time.sleep(0.1)


class Server:
    def __init__(self, runtime: str, folder: Path, threads: int, concurrency: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, __file__, "--serve", runtime, str(folder), str(self.port), str(threads)]
        self.proc = subprocess.Popen([*args, str(concurrency)], stdout=subprocess.DEVNULL)
        wait_ready(self.url, self.proc, f"{runtime} server")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _photo() -> bytes:
    from wms.data.synth import synth_pair

    buffer = io.BytesIO()
    synth_pair(seed=11, index=0, size=PHOTO)[0].save(buffer, "JPEG", quality=90)  # photos come as JPEG
    return buffer.getvalue()


def _post(client: httpx.Client, url: str, photo: bytes) -> float:
    start = time.perf_counter()
    answer = client.post(f"{url}/predict", files={"file": ("meter.jpg", photo)})
    seconds = time.perf_counter() - start
    answer.raise_for_status()
    return seconds


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
        "requests": len(seconds),
    }


def latency(servers: dict[str, Server], photo: bytes, runs: int) -> dict[str, dict[str, float]]:
    """Sequential requests, one client, the servers taking turns in blocks."""
    times: dict[str, list[float]] = {name: [] for name in servers}
    with httpx.Client(timeout=60) as client:
        for _ in range(ROUNDS):
            for name, server in servers.items():
                for _ in range(WARMUP):
                    _post(client, server.url, photo)
                times[name] += [_post(client, server.url, photo) for _ in range(max(1, runs // ROUNDS))]
    return {name: _percentiles(values) for name, values in times.items()}


def load(server: Server, photo: bytes, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` threads posting as fast as they can for `seconds`."""
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < stop_at:
                try:
                    took = _post(http, server.url, photo)
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(repr(exc))
                    continue
                with lock:
                    times.append(took)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests_per_second": round(len(times) / elapsed, 2),
        **_percentiles(times),
        "errors": len(errors),
        "error_examples": errors[:3],
        "server_peak_rss_mb": server.peak_rss_mb(),
    }


def _model(folder: Path, size: int) -> None:
    import torch

    from wms.serve.model import ModelCard
    from wms.train.export import export_onnx
    from wms.train.model import build_model
    from wms.train.segmenter import ONNX_FILE, ModelSpec, Segmenter

    torch.manual_seed(0)
    spec = ModelSpec(architecture="unet", image_size=size, threshold=0.5, kwargs=ARCH)
    segmenter = Segmenter(build_model("unet", **ARCH), spec)
    segmenter.save(folder)
    export_onnx(segmenter, folder / ONNX_FILE)
    sha = hashlib.sha256((folder / ONNX_FILE).read_bytes()).hexdigest()
    ModelCard(version=f"bench-{size}", onnx_sha256=sha).write(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="timed requests per server and model size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512], help="model input sizes")
    parser.add_argument("--seconds", type=float, default=30, help="length of the load test")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in the load test")
    parser.add_argument("--threads", type=int, default=1, help="serve.intra_op_threads (torch threads alike)")
    parser.add_argument("--concurrency", type=int, default=2, help="serve.max_concurrency")
    args = parser.parse_args()

    photo = _photo()
    load_before = os.getloadavg()[0]
    rows, throughput = [], {}
    with tempfile.TemporaryDirectory(prefix="wms-serve-bench-") as tmp:
        for size in args.sizes:
            folder = Path(tmp) / f"s{size}"
            _model(folder, size)
            servers = {rt: Server(rt, folder, args.threads, args.concurrency) for rt in ("onnx", "torch")}
            try:
                stats = latency(servers, photo, args.runs)
                row = {
                    **ARCH,
                    "model_input": size,
                    **{f"{rt}_{k}": v for rt, s in stats.items() for k, v in s.items() if k != "requests"},
                    "requests_each": stats["onnx"]["requests"],
                    "speedup_p50": round(stats["torch"]["p50_ms"] / stats["onnx"]["p50_ms"], 2),
                    "speedup_p99": round(stats["torch"]["p99_ms"] / stats["onnx"]["p99_ms"], 2),
                }
                rows.append(row)
                print(
                    f"model input {size}: onnx p50 {row['onnx_p50_ms']} ms p99 {row['onnx_p99_ms']} ms | "
                    f"torch p50 {row['torch_p50_ms']} ms p99 {row['torch_p99_ms']} ms | "
                    f"{row['speedup_p50']}x at p50",
                    flush=True,
                )
                servers["torch"].stop()
                if size == args.sizes[0]:
                    throughput = load(servers["onnx"], photo, args.clients, args.seconds)
                    throughput["model_input"] = size
                    print(
                        f"load, {args.clients} clients for {throughput['seconds']} s: "
                        f"{throughput['requests_per_second']} req/s, p99 {throughput['p99_ms']} ms, "
                        f"{throughput['errors']} errors, "
                        f"server peak RSS {throughput['server_peak_rss_mb']} MB",
                        flush=True,
                    )
            finally:
                for server in servers.values():
                    if server.proc.poll() is None:
                        server.stop()
    import onnxruntime
    import torch

    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "photo": f"{PHOTO}x{PHOTO} JPEG (synthetic meter), multipart upload, mask PNG answer",
        "served_by": "the same FastAPI app on uvicorn, one process per runtime; torch in eager mode",
        "serve_settings": {"intra_op_threads": args.threads, "max_concurrency": args.concurrency},
        "rounds": ROUNDS,
        "warmup_per_block": WARMUP,
        "cpus": os.cpu_count(),
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "note": "shared machine: other work ran on the same CPUs during the measurement",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "latency": rows,
        "throughput_onnx": throughput,
        "median_of_speedups_p50": statistics.median(r["speedup_p50"] for r in rows),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        runtime, folder, port, threads, concurrency = sys.argv[2:7]
        _serve(runtime, folder, int(port), int(threads), int(concurrency))
    else:
        main()
