"""What the deploy proxy adds to a request: `wms serve` asked directly, and through the proxy that
is the local deploy's stable port and the cluster's production address.

Run: .venv/bin/python benchmarks/proxy_overhead.py [--runs 200] [--size 128]

Starts one model server (the same FastAPI app in its own uvicorn process, as
benchmarks/serve_latency.py does, with a seeded random model: speed does not depend on training)
and one `python -m wms.deploy.proxy` in front of it, as the chart's container runs it. One
client posts the same 512x512 JPEG photo to /predict and times the whole request, and asks
GET /ready (what the kubelet's readiness probe sends through the address every 5 s), to the
server and to the proxy in alternating blocks after a warm-up, so that other work on the
machine hits both alike. The proxy's own counters (/_proxy/metrics) are read at the end: every
request must have been `forwarded`. On loopback: in a cluster each request also crosses the pod
network to the model's Service. Results go to benchmarks/results/proxy_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from serve_latency import (  # type: ignore[import-not-found]
    ROUNDS,
    WARMUP,
    Server,
    _free_port,
    _model,
    _percentiles,
    _photo,
    _post,
    wait_ready,
)

from wms.deploy.proxy import outcome_counts

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "proxy_overhead.json"


def _get_ready(client: httpx.Client, url: str) -> float:
    start = time.perf_counter()
    client.get(f"{url}/ready").raise_for_status()
    return time.perf_counter() - start


def timed(urls: dict[str, str], request: Callable[[httpx.Client, str], float], runs: int) -> dict:
    """`request` against each URL in turn, in ROUNDS blocks of runs/ROUNDS after WARMUP each."""
    times: dict[str, list[float]] = {name: [] for name in urls}
    with httpx.Client(timeout=60) as client:
        for _ in range(ROUNDS):
            for name, url in urls.items():
                for _ in range(WARMUP):
                    request(client, url)
                times[name] += [request(client, url) for _ in range(max(1, runs // ROUNDS))]
    return {name: _percentiles(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed requests per target and kind")
    parser.add_argument("--size", type=int, default=128, help="the model's input size")
    args = parser.parse_args()

    photo = _photo()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="wms-proxy-bench-") as tmp:
        folder = Path(tmp) / "model"
        _model(folder, args.size)
        server = Server("onnx", folder, threads=1, concurrency=2)
        upstream = Path(tmp) / "upstream.json"
        upstream.write_text(json.dumps({"url": server.url, "version": f"bench-{args.size}"}))
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        command = [
            sys.executable,
            "-m",
            "wms.deploy.proxy",
            "--port",
            str(port),
            "--upstream-file",
            str(upstream),
        ]
        proxy = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        try:
            proxied = f"http://127.0.0.1:{port}"
            wait_ready(proxied, proxy, "proxy")
            urls = {"direct": server.url, "proxied": proxied}
            predict = timed(urls, _post_photo(photo), args.runs)
            ready = timed(urls, _get_ready, args.runs)
            outcomes = outcome_counts(httpx.get(f"{proxied}/_proxy/metrics", timeout=5).text)
        finally:
            proxy.terminate()
            proxy.wait(timeout=30)
            server.stop()

    rows = {}
    for kind, stats in (("predict", predict), ("ready", ready)):
        direct, through = stats["direct"], stats["proxied"]
        rows[kind] = {
            **{f"direct_{k}": v for k, v in direct.items()},
            **{f"proxied_{k}": v for k, v in through.items()},
            "added_p50_ms": round(through["p50_ms"] - direct["p50_ms"], 2),
            "added_p99_ms": round(through["p99_ms"] - direct["p99_ms"], 2),
            "ratio_p50": round(through["p50_ms"] / direct["p50_ms"], 2),
        }
        print(
            f"{kind}: direct p50 {direct['p50_ms']} ms p99 {direct['p99_ms']} ms | "
            f"through the proxy p50 {through['p50_ms']} ms p99 {through['p99_ms']} ms | "
            f"+{rows[kind]['added_p50_ms']} ms at p50 ({rows[kind]['ratio_p50']}x)",
            flush=True,
        )
    print(f"proxy counted: {outcomes}", flush=True)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_input": args.size,
        "photo": "512x512 JPEG (synthetic meter), multipart upload, mask PNG answer",
        "rounds": ROUNDS,
        "warmup_per_block": WARMUP,
        "results": rows,
        "proxy_outcomes": outcomes,
        "cpus": os.cpu_count(),
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "python": platform.python_version(),
        "note": "loopback; shared machine: other work ran on the same CPUs during the measurement",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


def _post_photo(photo: bytes) -> Callable[[httpx.Client, str], float]:
    return lambda client, url: _post(client, url, photo)


if __name__ == "__main__":
    main()
