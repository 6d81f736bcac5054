"""Does the uncertainty score find the bad masks? Score and Dice of a trained model on real photos.

    .venv/bin/python benchmarks/quality.py --recipe cpu --tag calib          # a model on the real photos
    .venv/bin/python benchmarks/uncertainty.py --model benchmarks/.work/model-cpu-calib

Each val and test photo (never trained on) is predicted at its own size, as the service sees
it; the mask is scored against its label (Dice) and assessed (wms.uncertainty). Reported: how
well the score separates the misses (Dice < 0.5) and the poor masks (Dice < 0.8) from the rest
(ROC AUC), and for verdict thresholds around CHECK_FROM, the share of photos flagged, of misses
caught and of good masks (Dice >= 0.9) flagged. Writes benchmarks/results/uncertainty.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "water-meters"
THRESHOLDS = (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC: the chance that a positive photo scores above a negative one (ties count half)."""
    pos, neg = score[positive], score[~positive]
    if not pos.size or not neg.size:
        return float("nan")
    return float(np.mean([(p > neg).mean() + 0.5 * (p == neg).mean() for p in pos]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a saved model folder (model.pt)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    if not (args.data / "images").is_dir():
        print(f"skipped: real data not found at {args.data}")
        return 0

    from PIL import Image

    from wms.config import DataSettings
    from wms.data.splits import split_of
    from wms.train.preprocess import open_image
    from wms.train.segmenter import Segmenter
    from wms.uncertainty import CHECK_FROM, assess

    segmenter = Segmenter.load(args.model)
    cfg = DataSettings()
    rows: list[dict[str, Any]] = []
    for path in sorted((args.data / "images").glob("*.jpg")):
        split = split_of(path.stem, cfg.val_fraction, cfg.test_fraction)
        if split == "train":
            continue
        image = open_image(path)
        with Image.open(args.data / "masks" / path.name) as m:
            label = np.asarray(m.convert("L").resize(image.size)) > 127
        (prob,) = segmenter.probability_maps([image])
        mask = prob > segmenter.spec.threshold
        dice = 2 * (label & mask).sum() / max(label.sum() + mask.sum(), 1)
        assessed = assess(prob, segmenter.spec.threshold).to_dict()
        rows.append({"id": path.stem, "split": split, "dice": float(dice), **assessed})
    dice = np.array([r["dice"] for r in rows])
    score = np.array([r["score"] for r in rows])
    out = {
        "model": str(args.model.name),
        "photos": len(rows),
        "mean_dice": round(float(dice.mean()), 4),
        "misses": int((dice < 0.5).sum()),
        "good": int((dice >= 0.9).sum()),
        "check_from": CHECK_FROM,
        "auc": {
            f"dice<{cut}": {
                key: round(auc(np.array([r[key] for r in rows], float), dice < cut), 3)
                for key in ("score", "uncertain_share", "entropy", "regions")
            }
            for cut in (0.5, 0.8)
        },
        "thresholds": [
            {
                "check_from": t,
                "flagged": round(float((score >= t).mean()), 3),
                "misses_caught": round(float((score >= t)[dice < 0.5].mean()), 3),
                "good_flagged": round(float((score >= t)[dice >= 0.9].mean()), 3),
                "mean_dice_sure": round(float(dice[score < t].mean()), 4) if (score < t).any() else None,
                "mean_dice_flagged": round(float(dice[score >= t].mean()), 4) if (score >= t).any() else None,
            }
            for t in THRESHOLDS
        ],
    }
    print(json.dumps(out, indent=2))
    target = REPO / "benchmarks" / "results" / "uncertainty.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
