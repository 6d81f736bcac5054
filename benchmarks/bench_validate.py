"""How long validation takes next to simply decoding every file once, on the real water-meter data.

Run: .venv/bin/python benchmarks/bench_validate.py [--data PATH]

The contract: validate wall time / baseline wall time <= 0.7, where the baseline is a plain
single-process loop that only decodes every image and mask with Pillow. All timings run in one
invocation, after one pass that reads every file so no timing pays for a cold disk cache; each
round times the baseline first, then `validate_dataset`, then the `wms data validate` command.
With --repeat N the ratios use the fastest of N rounds of each, which filters out other work on
the machine. Results go to benchmarks/results/validate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import PIL
from PIL import Image

from wms.data.pairs import find_pairs
from wms.data.validate import validate_dataset
from wms.sandbox import images

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "water-meters"
RESULTS = REPO / "benchmarks" / "results" / "validate.json"
CONTRACT = 0.7


def _files(data: Path) -> list[Path]:
    scan = find_pairs(data)
    return [p for pair in scan.pairs for p in (pair.image, pair.mask)]


def _baseline(files: list[Path]) -> float:
    start = time.perf_counter()
    for path in files:
        with Image.open(path) as img:
            img.load()
    return time.perf_counter() - start


def _library(data: Path) -> tuple[float, int]:
    start = time.perf_counter()
    report = validate_dataset(data, size=None)
    return time.perf_counter() - start, report.pairs


def _cli(data: Path) -> float:
    script = Path(sys.executable).with_name("wms")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "wms.cli.main"]
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "data", "validate", "--any-size", str(data)], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1 only means the data has errors (raw JPEG masks do)
        sys.exit(f"`wms data validate` failed ({done.returncode}):\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset folder (images/, masks/)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; ratios use the fastest of each")
    args = parser.parse_args()
    data: Path = args.data
    if not (data / "images").is_dir():
        print(f"skipped: no dataset at {data} (pass --data PATH)")
        return
    files = _files(data)
    for path in files:  # warm the page cache so the first timing is not penalised
        path.read_bytes()
    rounds = []
    for _ in range(max(1, args.repeat)):
        baseline = _baseline(files)
        library, pairs = _library(data)
        cli = _cli(data)
        rounds.append({"baseline_decode_s": baseline, "validate_dataset_s": library, "cli_validate_s": cli})
        print(f"round: baseline {baseline:.2f} s, validate_dataset {library:.2f} s, CLI {cli:.2f} s")
    baseline, library, cli = (min(r[key] for r in rounds) for key in rounds[0])
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": os.path.relpath(data, REPO),
        "pairs": pairs,
        "files": len(files),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        # validate_dataset and the command decode in the confined child where this machine can
        # (data.decode_sandbox = auto), which costs more than decoding in the process: say which ran.
        "decoder": "confined child" if images.confined() else "in the process",
        "baseline_decode_s": round(baseline, 3),
        "validate_dataset_s": round(library, 3),
        "cli_validate_s": round(cli, 3),
        "ratio_validate_dataset": round(library / baseline, 3),
        "ratio_cli": round(cli / baseline, 3),
        "contract": CONTRACT,
        "rounds": [{key: round(value, 3) for key, value in r.items()} for r in rounds],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{pairs} pairs ({len(files)} files) on {os.cpu_count()} CPU(s), fastest of {len(rounds)}, "
        f"decoder: {result['decoder']}"
    )
    print(f"baseline decode loop      {baseline:7.2f} s")
    print(f"validate_dataset          {library:7.2f} s   ratio {library / baseline:.3f}")
    print(f"wms data validate (CLI)   {cli:7.2f} s   ratio {cli / baseline:.3f}")
    verdict = "meets" if library / baseline <= CONTRACT else "MISSES"
    print(f"{verdict} the {CONTRACT} contract (validate_dataset); written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
