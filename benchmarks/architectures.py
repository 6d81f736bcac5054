"""Training steps per second of each architecture on the CPU: parameters and images/s.

    .venv/bin/python benchmarks/architectures.py [--size 192] [--batch-size 8] [--threads 1]

Random batches through the training step (forward, BCE + soft Dice, backward, AdamW), a few
warm-up steps then timed ones. "unet" is measured as the `cpu` recipe builds it (width 8, depth 4).
Writes benchmarks/results/architectures-cpu.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--note", default="", help="conditions of the run, kept in the results")
    args = parser.parse_args()

    import torch

    from wms.train.losses import bce_dice as loss_fn
    from wms.train.model import ARCHITECTURES, build_model, count_parameters

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, 3, args.size, args.size)
    y = (torch.rand(args.batch_size, 1, args.size, args.size) > 0.95).float()
    rows = []
    for name in ARCHITECTURES:
        model = build_model(name, base_channels=8, depth=4).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for step in range(args.warmup + args.steps):
            if step == args.warmup:
                started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
        seconds = time.perf_counter() - started
        rows.append(
            {
                "architecture": name,
                "parameters": count_parameters(model),
                "images_per_second": round(args.steps * args.batch_size / seconds, 2),
            }
        )
        print(f"{name:20s} {rows[-1]['parameters']:>11,d} params  {rows[-1]['images_per_second']:6.2f} img/s")
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "settings": {k: v for k, v in vars(args).items() if k != "note"} | {"base_channels": 8, "depth": 4},
        "note": args.note,
        "results": rows,
    }
    out = REPO / "benchmarks" / "results" / "architectures-cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
