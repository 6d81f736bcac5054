"""DDP on the CPU against one process: two gloo processes with batch 4 each vs one with batch 8.

    .venv/bin/python benchmarks/ddp_check.py [--epochs 24] [--count 96]

Both train the same synthetic pairs with the same seed through `wms train` (the DDP run starts
torchrun itself); a 40% val split keeps chance swings of these small runs down. Prints and
writes benchmarks/results/ddp-check.json: the val Dice at the end (mean of the last 4 epochs)
of each, and their difference, which should be within 0.02. On the CPU batch-norm statistics
are per process (gloo has no SyncBatchNorm), so the two are close, not equal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = "[data]\nsize = 64\n[train]\nimage_size = 32\nbase_channels = 8\ndepth = 2\nlearning_rate = 0.01\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--count", type=int, default=96)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    import mlflow

    from wms.data.synth import synthesize

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="wms-ddp-check-") as tmp:
        data = Path(tmp) / "data"
        synthesize(data, count=args.count, size=64, seed=5)
        for name, sets in {
            "single": ["train.batch_size=8"],
            "ddp": ["train.batch_size=4", "train.devices=2"],
        }.items():
            root = Path(tmp) / name
            root.mkdir()
            (root / "wms.toml").write_text(TINY)
            common = [
                f"train.epochs={args.epochs}",
                "train.device='cpu'",
                "data.val_fraction=0.4",
                "data.test_fraction=0.1",
            ]
            flags = [f"--set={s}" for s in [*sets, *common]]
            env = {k: v for k, v in os.environ.items() if not k.startswith("WMS_")} | {"OMP_NUM_THREADS": "1"}
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "wms", *flags, "train", str(data)],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
            client = mlflow.MlflowClient(f"sqlite:///{root / '.wms' / 'mlflow.db'}")
            run = client.search_runs([client.get_experiment_by_name("wms").experiment_id])[0]
            history = sorted(client.get_metric_history(run.info.run_id, "val_dice"), key=lambda m: m.step)
            last = [m.value for m in history][-4:]
            results[name] = {
                "val_dice_end": round(sum(last) / len(last), 4),
                "best_val_dice": round(run.data.metrics["best_val_dice"], 4),
                "test_dice": round(run.data.metrics["test_dice"], 4),
                "seconds": round(time.perf_counter() - started, 1),
            }
    difference = round(abs(results["ddp"]["val_dice_end"] - results["single"]["val_dice_end"]), 4)
    body = {
        "epochs": args.epochs,
        "pairs": args.count,
        **results,
        "difference": difference,
        "within_0_02": difference <= 0.02,
    }
    out = REPO / "benchmarks" / "results" / "ddp-check.json"
    out.write_text(json.dumps(body, indent=2) + "\n")
    print(json.dumps(body, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
