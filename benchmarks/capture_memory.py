"""Memory of `wms serve` that keeps photos for labelling: into a folder (the node's spool, as the
chart's pods do now) against straight into S3 (as they did, with s3fs and botocore loaded).

Run: .venv/bin/python benchmarks/capture_memory.py [--photos 20]

Each case starts a fresh `wms serve` (serve_memory.WmsServe: the CLI, as the pod runs it) on the
default [train] model with seeded random weights, with serve.capture = sample at rate 1 (every
photo kept, no rate limit), posts `--photos` distinct synthetic meter photos one after another,
waits for the captures to be written, and reads the resident memory (VmRSS) and its peak
(VmHWM). S3 is moto's server on loopback (bench_store.moto_s3). Results go to
benchmarks/results/capture_memory.json.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_store import moto_s3
from serve_memory import MODELS, RESULTS, WmsServe, _model


def _photos(count: int) -> list[bytes]:
    from wms.data.synth import synth_pair

    photos = []
    for index in range(count):
        buffer = io.BytesIO()
        synth_pair(seed=5, index=index, size=512)[0].save(buffer, "JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


def _case(folder: Path, workdir: Path, inbox: str, photos: list[bytes]) -> dict[str, float]:
    capture = {"WMS_SERVE__CAPTURE": "off"}
    if inbox:
        capture = {
            "WMS_SERVE__CAPTURE": "sample",
            "WMS_SERVE__CAPTURE_SAMPLE_RATE": "1",
            "WMS_SERVE__CAPTURE_PER_MINUTE": "100000",
            "WMS_SERVE__CAPTURE_DIR": inbox,
        }
    server = WmsServe(folder, workdir, capture)
    try:
        for photo in photos:
            answer = httpx.post(f"{server.url}/predict", files={"file": ("m.jpg", photo)}, timeout=120)
            answer.raise_for_status()
        time.sleep(2)  # the captures are written after the answers, in a worker thread
        scrape = httpx.get(f"{server.url}/metrics").text
        written = sum(
            float(line.rsplit(" ", 1)[1])
            for line in scrape.splitlines()
            if line.startswith("wms_captures_total{") and 'outcome="written"' in line
        )
        return {
            "rss_mb": round(server.peak_mb("VmRSS"), 1),
            "peak_mb": round(server.peak_mb(), 1),
            "captures_written": int(written),
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=20)
    args = parser.parse_args()
    photos = _photos(args.photos)
    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder, workdir = Path(tmp) / "model", Path(tmp) / "work"
        folder.mkdir()
        workdir.mkdir()
        _model(folder, *MODELS["default"])
        cases["off"] = _case(folder, workdir, "", photos)
        cases["folder"] = _case(folder, workdir, str(Path(tmp) / "spool"), photos)
        with moto_s3():
            import boto3

            boto3.client("s3").create_bucket(Bucket="bench-inbox")
            cases["s3"] = _case(folder, workdir, "s3://bench-inbox/inbox", photos)
    for name, case in cases.items():
        print(json.dumps({"capture": name, **case}), flush=True)
    summary = {"s3_minus_folder_rss_mb": round(cases["s3"]["rss_mb"] - cases["folder"]["rss_mb"], 1)}
    print(json.dumps(summary))
    RESULTS.mkdir(exist_ok=True)
    record = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "photos": args.photos,
        "cases": cases,
        **summary,
    }
    (RESULTS / "capture_memory.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
