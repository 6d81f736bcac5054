"""What decoding in the confined child (wms.sandbox) costs, on the real water-meter data.

Run: .venv/bin/python benchmarks/decode_sandbox.py [--data PATH] [--repeat N]

Two jobs that decode every file, each timed with `data.decode_sandbox` off (Pillow in the process
itself) and auto (the confined child, where this machine has libseccomp), side by side in one
run, alternating, after one pass that reads every file so no timing pays for a cold disk cache:
- `validate_dataset` (one worker process per CPU, each with its own child);
- the training cache's decode (`wms.train.cache.decode` at 512 px: one worker process per CPU).
The fastest of N rounds of each is reported with the ratio auto / off. Results go to
benchmarks/results/decode_sandbox.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from wms.data.pairs import find_pairs
from wms.data.validate import validate_dataset
from wms.sandbox import DecodeSandbox, images
from wms.train.cache import decode

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "water-meters"
RESULTS = REPO / "benchmarks" / "results" / "decode_sandbox.json"


def timed(mode: DecodeSandbox, job: Callable[[], object]) -> float:
    images.configure(mode)
    start = time.perf_counter()
    job()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset folder (images/, masks/)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; ratios use the fastest of each")
    args = parser.parse_args()
    data: Path = args.data
    if not (data / "images").is_dir():
        print(f"skipped: no dataset at {data} (pass --data PATH)")
        return
    pairs = find_pairs(data).pairs
    for pair in pairs:  # warm the page cache so the first timing is not penalised
        pair.image.read_bytes(), pair.mask.read_bytes()
    images.configure("auto")
    if not images.confined():
        print(f"skipped: this machine cannot confine the decoder ({images._why_not})")
        return

    def cache() -> None:
        decode(pairs, 512)  # what a training run does when its cache misses

    jobs = {"validate_dataset": lambda: validate_dataset(data, size=None), "cache_decode": cache}
    times: dict[str, dict[str, list[float]]] = {name: {"off": [], "auto": []} for name in jobs}
    for round_ in range(max(1, args.repeat)):
        for name, job in jobs.items():
            for mode in ("off", "auto"):
                times[name][mode].append(timed(mode, job))
        line = ", ".join(
            f"{n} off {t['off'][-1]:.2f} s / child {t['auto'][-1]:.2f} s" for n, t in times.items()
        )
        print(f"round {round_ + 1}: {line}")
    best = {name: {mode: min(values) for mode, values in t.items()} for name, t in times.items()}
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": os.path.relpath(data, REPO),
        "pairs": len(pairs),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "jobs": {
            name: {
                "off_s": round(b["off"], 3),
                "child_s": round(b["auto"], 3),
                "ratio": round(b["auto"] / b["off"], 3),
            }
            for name, b in best.items()
        },
        "rounds": {
            name: {mode: [round(v, 3) for v in values] for mode, values in t.items()}
            for name, t in times.items()
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(pairs)} pairs on {os.cpu_count()} CPU(s), fastest of {args.repeat} rounds")
    for name, b in best.items():
        ratio = b["auto"] / b["off"]
        print(f"{name:17} here {b['off']:6.2f} s   in the child {b['auto']:6.2f} s   ratio {ratio:.3f}")
    print(f"written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
