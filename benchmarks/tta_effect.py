"""What test-time augmentation does for one saved model, on the real test split.

    .venv/bin/python benchmarks/tta_effect.py benchmarks/.work/model-cpu-x-base

Scores the model's test photos three ways: as trained, with the flip average that
`train.tta` builds into a model, and with the mean over all eight quarter turns and flips
(D4). Prints mean, median and the tail (photos below Dice 0.5 and 0.8) for each, and writes
benchmarks/results/tta-effect.json. The model folder is one quality.py saved (outside git).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DEFAULT_DATA, REPO, real_splits

from wms.scores import evaluate
from wms.train.segmenter import Segmenter


def d4_average(probabilities: Callable[[np.ndarray], torch.Tensor]) -> Callable[[np.ndarray], torch.Tensor]:
    """Probabilities averaged over the 4 quarter turns of the batch and of its mirror image."""

    def averaged(batch: np.ndarray) -> torch.Tensor:
        total = torch.zeros(())
        for turns in range(4):
            turned = np.rot90(batch, turns, (-2, -1))
            total = total + torch.rot90(probabilities(np.ascontiguousarray(turned)), -turns, (-2, -1))
            mirrored = np.ascontiguousarray(turned[..., ::-1])
            total = total + torch.rot90(probabilities(mirrored).flip(-1), -turns, (-2, -1))
        return total / 8

    return averaged


def tail(dice: np.ndarray) -> dict[str, float]:
    return {
        "mean": round(float(dice.mean()), 4),
        "median": round(float(np.median(dice)), 4),
        "below_0_5": int((dice < 0.5).sum()),
        "below_0_8": int((dice < 0.8).sum()),
    }


def report(scores: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Print each variant's summary of per-photo Dice; returns them as rows for a JSON result."""
    rows = []
    width = max(map(len, scores))
    for name, values in scores.items():
        summary = tail(np.array(values))
        rows.append({"variant": name, **summary})
        print(
            f"{name:{width}s}  test Dice {summary['mean']:.4f}  median {summary['median']:.4f}  "
            f"< 0.5: {summary['below_0_5']:3d}  < 0.8: {summary['below_0_8']:3d}"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a saved model folder (model.pt + model.json)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".work")
    args = parser.parse_args()
    if not (args.data / "images").is_dir():
        print(f"skipped: real data not found at {args.data}")
        return 0
    test = real_splits(args.data, args.work)["test"]
    loaded = Segmenter.load(args.model)
    plain = Segmenter(loaded.network, replace(loaded.spec, tta=False))
    flip = Segmenter(loaded.network, replace(loaded.spec, tta=True))
    d4 = Segmenter(loaded.network, replace(loaded.spec, tta=False))
    d4.probabilities = d4_average(d4.probabilities)  # type: ignore[method-assign]
    out = {"model": args.model.name, "test_images": len(test)}
    for name, segmenter in (("as trained", plain), ("flip (train.tta)", flip), ("d4", d4)):
        out[name] = tail(np.array([s.dice for s in evaluate(segmenter, test)]))
        print(f"{name:17s} {out[name]}", flush=True)
    target = REPO / "benchmarks" / "results" / "tta-effect.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
