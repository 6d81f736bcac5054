"""Ingest and pull throughput of the dataset store, local folder vs S3 (moto's server on loopback).

    .venv/bin/python benchmarks/bench_store.py [--data ../shared/datasets/water-meters] [--pairs 830]

Writes benchmarks/results/store.json. moto's server runs in its own process and keeps
objects in memory, so the S3 numbers measure the real s3fs/boto3 code path and HTTP on
loopback (bounded by moto's speed), not a network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "water-meters"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"moto_server did not listen on port {port}")


@contextmanager
def moto_s3() -> Iterator[None]:
    """moto's S3 server on a free loopback port, for boto3 and s3fs through the usual AWS
    variables, while the block runs; stopped after, whatever happened."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        os.environ.update(
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
        )
        yield
    finally:
        server.terminate()
        server.wait(timeout=10)


def subset(src: Path, n: int, dst: Path) -> Path:
    """The first n pairs of src, linked into dst."""
    for kind in ("images", "masks"):
        (dst / kind).mkdir(parents=True)
    for image in sorted((src / "images").iterdir())[:n]:
        os.link(image, dst / "images" / image.name)
        os.link(src / "masks" / image.name, dst / "masks" / image.name)
    return dst


def measure(url: str, data: Path, pairs: int, scratch: Path) -> dict[str, float]:
    from wms.data.store import DatasetStore

    store = DatasetStore(url)
    started = time.perf_counter()
    version = store.ingest(data, None).version
    ingest_s = time.perf_counter() - started
    started = time.perf_counter()
    store.pull(version, scratch / "pulled")
    pull_s = time.perf_counter() - started
    started = time.perf_counter()
    again = store.pull(version, scratch / "pulled")
    verify_s = time.perf_counter() - started
    assert again.fetched == 0
    return {
        "ingest_seconds": round(ingest_s, 3),
        "ingest_pairs_per_s": round(pairs / ingest_s, 1),
        "pull_seconds": round(pull_s, 3),
        "pull_pairs_per_s": round(pairs / pull_s, 1),
        "repull_verify_pairs_per_s": round(pairs / verify_s, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pairs", type=int, default=830)
    args = parser.parse_args()
    if not (args.data / "images").is_dir():
        print(f"skipped: real data not found at {args.data}")
        return 0

    results: dict[str, object] = {"pairs": args.pairs, "machine": f"{os.cpu_count()} cores"}
    with moto_s3(), tempfile.TemporaryDirectory() as tmp:
        import boto3

        boto3.client("s3").create_bucket(Bucket="wms-bench")
        data = subset(args.data, args.pairs, Path(tmp) / "data")
        results["bytes"] = sum(p.stat().st_size for p in data.glob("*/*"))
        for name, url in (("local", str(Path(tmp) / "store")), ("s3", "s3://wms-bench/store")):
            scratch = Path(tmp) / name
            scratch.mkdir()
            results[name] = measure(url, data, args.pairs, scratch)
            shutil.rmtree(scratch)
            print(name, results[name])
    out = REPO / "benchmarks" / "results" / "store.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
