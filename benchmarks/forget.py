"""How long `wms data forget` takes on a store a year of batches made, local folder vs S3.

    .venv/bin/python benchmarks/forget.py [--data ../shared/datasets/water-meters] [--versions 40]

The real pairs are prepared (`wms data prepare`) and ingested in `--versions` batches, one
version each, as pushed batches would make them; then, through the `wms` command a person runs:
a look for a photo held nowhere (`--dry-run`), a forget of two pairs held by every version, and
an ingest that brings one of them back (refused). On S3 (moto's server on loopback, a versioned
bucket as infrastructure/terraform makes it) the forget also deletes the bucket's old versions.
Writes benchmarks/results/forget.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_store import DEFAULT_DATA, REPO, moto_s3

WMS = [sys.executable, "-m", "wms"]


def wms(project: Path, *args: str, ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    """Run `wms ARGS` in `project`; its wall time and output."""
    started = time.perf_counter()
    done = subprocess.run([*WMS, *args], cwd=project, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in ok:
        raise RuntimeError(f"wms {' '.join(args)} exited {done.returncode}: {done.stdout}{done.stderr}")
    return round(seconds, 2), done.stdout + done.stderr


def measure(project: Path, prepared: Path, versions: int, scratch: Path) -> dict[str, object]:
    """Ingest `prepared` in `versions` batches into the project's store, then time the forget."""
    names = sorted(p.name for p in (prepared / "images").iterdir())
    chunks = [names[i::versions] for i in range(versions)]
    started = time.perf_counter()
    for n, chunk in enumerate(chunks):
        batch = scratch / f"batch-{n}"
        for kind in ("images", "masks"):
            (batch / kind).mkdir(parents=True)
        for name in chunk:
            stem = name.rsplit(".", 1)[0]
            os.link(prepared / "images" / name, batch / "images" / name)
            mask = next((prepared / "masks").glob(f"{stem}.*"))
            os.link(mask, batch / "masks" / mask.name)
        wms(project, "data", "ingest", str(batch))
    ingest_s = time.perf_counter() - started
    first, second = (name.rsplit(".", 1)[0] for name in chunks[0][:2])  # held by every version
    lookup_s, _ = wms(project, "data", "forget", "0123456789abcdef", "--dry-run")
    forget_s, out = wms(project, "data", "forget", "--pair", first, "--pair", second)
    back = scratch / "back"
    for kind in ("images", "masks"):
        (back / kind).mkdir(parents=True)
        for path in (prepared / kind).glob(f"{first}.*"):
            shutil.copy(path, back / kind / path.name)
    refused_s, why = wms(project, "data", "ingest", str(back), ok=(1,))
    assert "deleted on request" in why, why
    old = next((line for line in out.splitlines() if "old versions" in line), "")
    return {
        "versions": versions,
        "setup_ingest_seconds": round(ingest_s, 1),
        "lookup_dry_run_seconds": lookup_s,
        "forget_two_pairs_seconds": forget_s,
        "ingest_refused_seconds": refused_s,
        "old_versions_line": old.strip(),
    }


def project_at(root: Path, env: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run([*WMS, "init"], cwd=root, check=True, capture_output=True, env=env)
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--versions", type=int, default=40)
    args = parser.parse_args()
    if not (args.data / "images").is_dir():
        print(f"skipped: real data not found at {args.data}")
        return 0

    results: dict[str, object] = {"machine": f"{os.cpu_count()} cores"}
    with moto_s3(), tempfile.TemporaryDirectory() as tmp:
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="wms-bench")
        s3.put_bucket_versioning(Bucket="wms-bench", VersioningConfiguration={"Status": "Enabled"})
        prepared = Path(tmp) / "prepared"
        subprocess.run(
            [*WMS, "data", "prepare", str(args.data), str(prepared)], check=True, capture_output=True
        )
        results["pairs"] = len(list((prepared / "images").iterdir()))
        for name, store, inbox in (
            ("local", "", ""),
            ("s3", "s3://wms-bench/store", "s3://wms-bench/inbox"),
        ):
            os.environ.pop("WMS_STORE__URL", None)
            os.environ.pop("WMS_SERVE__CAPTURE_DIR", None)
            if store:
                os.environ.update(WMS_STORE__URL=store, WMS_SERVE__CAPTURE_DIR=inbox)
            project = project_at(Path(tmp) / name, dict(os.environ))
            results[name] = measure(project, prepared, args.versions, Path(tmp) / f"{name}-scratch")
            print(name, results[name])
    out = REPO / "benchmarks" / "results" / "forget.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
