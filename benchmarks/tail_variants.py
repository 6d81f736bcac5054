"""Can prediction alone lift the tail? A saved quality model's test split, predicted several ways.

    .venv/bin/python benchmarks/quality.py --recipe cpu --seed 1 --tag base   # saves the model
    .venv/bin/python benchmarks/tail_variants.py cpu-base-seed1

Variants, all from the same weights (the model's own flip TTA included):
- plain: the model as it predicts everywhere (the quality benchmark's score);
- largest region: only the largest connected region of the mask (a meter has one window);
- quarter turns, mean / max: the photo turned by 0, 90, 180 and 270 degrees, the four
  probability maps turned back and averaged, or their pixel-wise maximum;
- surest turn: the turn whose predicted region has the highest mean probability.
(benchmarks/tta_effect.py scores the mean over all eight turns and mirror images, D4.)

Writes benchmarks/results/tail-variants-NAME.json: mean, median and the tail (< 0.5, < 0.8)
of the per-photo Dice over the hash test split.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from quality import DEFAULT_DATA, REPO, real_splits
from tta_effect import report

from wms.crops import largest_region

TURNS = (None, "ROTATE_90", "ROTATE_180", "ROTATE_270")  # PIL turns counter-clockwise, as np.rot90


def surest(probs: np.ndarray, threshold: float) -> np.ndarray:
    def sureness(prob: np.ndarray) -> float:
        region = prob > threshold
        return float(prob[region].mean()) if region.any() else 0.0

    return probs[int(np.argmax([sureness(p) for p in probs]))] > threshold


def saved_model_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's parser that takes a saved quality model's NAME, --data and --work."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("name", help="a model saved by quality.py: benchmarks/.work/model-NAME")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".work")
    return parser


def saved_model(data: Path, work: Path, name: str) -> Path | int:
    """The folder of a model quality.py saved, or the exit code once it has said why there is none."""
    if not (data / "images").is_dir():
        print(f"skipped: real data not found at {data}")
        return 0
    folder = work / f"model-{name}"
    if not folder.is_dir():
        print(f"no saved model at {folder}: run benchmarks/quality.py first (see --help)", file=sys.stderr)
        return 2
    return folder


def main() -> int:
    args = saved_model_parser(__doc__).parse_args()
    folder = saved_model(args.data, args.work, args.name)
    if isinstance(folder, int):
        return folder

    from PIL import Image

    from wms.train.metrics import dice
    from wms.train.preprocess import mask_to_array, open_image, open_mask
    from wms.train.segmenter import Segmenter

    segmenter = Segmenter.load(folder)
    threshold = segmenter.spec.threshold
    test = real_splits(args.data, args.work)["test"]
    variants: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "plain": lambda probs: probs[0] > threshold,
        "largest region": lambda probs: largest_region(probs[0] > threshold),
        "quarter turns, mean": lambda probs: probs.mean(0) > threshold,
        "quarter turns, max": lambda probs: probs.max(0) > threshold,
        "surest turn": lambda probs: surest(probs, threshold),
    }
    scores: dict[str, list[float]] = {name: [] for name in variants}
    for done, pair in enumerate(test, start=1):
        image, true = open_image(pair.image), mask_to_array(open_mask(pair.mask))
        turned = [image if t is None else image.transpose(getattr(Image.Transpose, t)) for t in TURNS]
        maps = segmenter.probability_maps(turned)
        probs = np.stack([np.rot90(m, -k) for k, m in enumerate(maps)])
        for name, variant in variants.items():
            scores[name].append(dice(variant(probs), true))
        print(f"\r{done}/{len(test)} photos", end="", flush=True)
    print()
    rows = report(scores)
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": args.name,
        "tta": segmenter.spec.tta,
        "test_images": len(test),
        "variants": rows,
    }
    target = REPO / "benchmarks" / "results" / f"tail-variants-{args.name}.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
