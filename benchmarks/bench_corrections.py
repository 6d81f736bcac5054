"""How long the corrections check takes on a store with a long history (a synthetic folder store).

    .venv/bin/python benchmarks/bench_corrections.py [--versions 200] [--pairs 830] [--per-version 5]

Writes `--versions` manifests straight into a temporary folder store (with a blob for every mask,
none for the photos): the first holds `--pairs` pairs, each later one adds `--per-version`. Then times
`check_corrections` on the latest version for a batch that corrects one pair stored since the first
version, three ways: a new mask (a genuine fix), the mask the pair held two versions back and
replaced since (a stale copy, refused), and a new mask whose bytes another version stores too.
Prints JSON (`--out FILE` writes it too); benchmarks/results/corrections.json keeps a run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def entry(pid: str, mask: str) -> dict[str, Any]:
    return {
        "image": {"sha256": sha(f"image {pid}"), "name": f"{pid}.jpg"},
        "mask": {"sha256": mask, "name": f"{pid}.png"},
        "split": "train",
        "size": [512, 512],
    }


def build(root: Path, versions: int, pairs: int, per_version: int) -> tuple[Any, list[str]]:
    """A store whose pair p00000 had its mask corrected at the version two before the last."""
    from wms.data.store import DatasetStore

    store = DatasetStore(str(root))
    entries = {f"p{i:05d}": entry(f"p{i:05d}", sha(f"mask p{i:05d}")) for i in range(pairs)}
    ids: list[str] = []
    for n in range(versions):
        if n == versions - 2:
            entries["p00000"] = entry("p00000", sha("mask p00000, corrected"))
        for k in range(per_version if n else 0):
            pid = f"q{n:04d}_{k}"
            entries[pid] = entry(pid, sha(f"mask {pid}"))
        version = f"{n:012x}"
        manifest = store._manifest(version, ids[-1] if ids else None, entries)
        store._put(store._manifest_path(version), json.dumps(manifest, indent=1).encode())
        ids.append(version)
    masks = {e["mask"]["sha256"] for e in entries.values()} | {sha("mask p00000")}
    for mask in masks:  # every mask a version holds is a blob (the photos' blobs are left out)
        store._put(store._blob(mask), b"")
    return store, ids


def timed(store: Any, base: str, mask: str) -> dict[str, Any]:
    from wms.data.corrections import check_corrections
    from wms.errors import ConflictError

    manifest = store.manifest(base)
    reads = 0
    read = store.manifest

    def counted(version: str) -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return read(version)

    store.manifest = counted
    started = time.perf_counter()
    try:
        check_corrections(store, manifest, {"p00000": entry("p00000", mask)}, ["p00000"])
        refused = False
    except ConflictError:
        refused = True
    seconds = time.perf_counter() - started
    store.manifest = read
    return {"seconds": round(seconds, 3), "manifests_read": reads, "refused": refused}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=830)
    parser.add_argument("--per-version", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    with tempfile.TemporaryDirectory(prefix="wms-corrections-") as tmp:
        store, ids = build(Path(tmp) / "store", args.versions, args.pairs, args.per_version)
        cases = {
            "genuine fix (a new mask)": sha("mask p00000, fixed again"),
            "stale copy (the mask replaced two versions back)": sha("mask p00000"),
            "new mask whose bytes the store holds for another pair": sha("mask q0001_0"),
        }
        result = {
            "versions": args.versions,
            "pairs_in_latest": len(store.manifest(ids[-1])["pairs"]),
            **{name: timed(store, ids[-1], mask) for name, mask in cases.items()},
        }
    text = json.dumps(result, indent=1) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
