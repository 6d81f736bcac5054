"""What a second stage costs a prediction: one saved model served with and without it.

    .venv/bin/python benchmarks/refine_latency.py cpu-two-stage-seed1 [--photos 20] [--runs 3]

The model quality.py saved (benchmarks/.work/model-NAME, trained with a second stage) is
exported to ONNX, and ONNX Runtime predicts real test photos (as `wms serve` does: a PIL
image in, a 512x512 mask out) twice: with the second stage, and with the first network alone
(the same model.onnx, its spec without `refine`). A third way is both stages as they were
before `Crop.paste` sampled only the crop's footprint (every photo pixel: `full_frame_paste`),
so the change is measured beside the code it replaced. Each way is timed in blocks that take
turns, with a warm-up, on the same photos; medians per photo are reported with their ratios.
Writes benchmarks/results/refine-latency.json.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

from quality import REPO, real_splits
from tail_variants import saved_model, saved_model_parser

ROUNDS = 3


def full_frame_paste(crop, prob, height: int, width: int):  # type: ignore[no-untyped-def]
    """Crop.paste as it was: the affine map sampled at every pixel of the photo."""
    import numpy as np
    from scipy import ndimage

    a, b = crop.matrix()
    inverse = np.linalg.inv(a)
    return ndimage.affine_transform(
        prob.astype(np.float32, copy=False),
        inverse,
        -inverse @ b,
        (height, width),
        order=1,
        mode="grid-constant",
    )


@contextmanager
def pasting_with(paste: Callable) -> Iterator[None]:
    """Crop.paste replaced for the block (the earlier code, timed beside the current)."""
    from wms.crops import Crop

    current = Crop.paste
    Crop.paste = paste  # type: ignore[method-assign]
    try:
        yield
    finally:
        Crop.paste = current  # type: ignore[method-assign]


def main() -> int:
    parser = saved_model_parser(__doc__)
    parser.add_argument("--photos", type=int, default=20, help="test photos to predict")
    parser.add_argument("--runs", type=int, default=3, help="passes over the photos per way and round")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    args = parser.parse_args()
    folder = saved_model(args.data, args.work, args.name)
    if isinstance(folder, int):
        return folder

    from wms.train.export import OnnxSegmenter, export_onnx
    from wms.train.preprocess import open_image
    from wms.train.segmenter import ONNX_FILE, SPEC_FILE, ModelSpec, Segmenter

    segmenter = Segmenter.load(folder)
    if segmenter.spec.refine is None:
        print(f"{args.name} has no second stage: train it with train.refine_epochs", file=sys.stderr)
        return 2
    photos = [open_image(p.image) for p in real_splits(args.data, args.work)["test"][: args.photos]]
    with tempfile.TemporaryDirectory(prefix="wms-refine-latency-") as tmp:
        two, one = Path(tmp) / "two", Path(tmp) / "one"
        segmenter.save(two)
        export_onnx(segmenter, two / ONNX_FILE)
        shutil.copytree(two, one)
        first_only = replace(ModelSpec.read(one / SPEC_FILE), refine=None)
        (one / SPEC_FILE).write_text(json.dumps(asdict(first_only)))
        first, both = OnnxSegmenter.load(one, args.threads), OnnxSegmenter.load(two, args.threads)
        ways = {
            "first network": (first, nullcontext),
            "both stages": (both, nullcontext),
            "both, full-frame paste": (both, lambda: pasting_with(full_frame_paste)),
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(ROUNDS):
            for name, (model, context) in ways.items():
                with context():
                    model.predict_masks(photos[:2])  # warm-up
                    for _ in range(args.runs):
                        for photo in photos:
                            start = time.perf_counter()
                            model.predict_masks([photo])
                            times[name].append(time.perf_counter() - start)
    medians = {name: round(1000 * statistics.median(values), 2) for name, values in times.items()}
    ratio = round(medians["both stages"] / medians["first network"], 2)
    paste_gain = round(medians["both, full-frame paste"] / medians["both stages"], 2)
    for name, ms in medians.items():
        print(f"{name:<24} {ms:8.2f} ms per photo (median of {len(times[name])})")
    print(f"the second stage costs {ratio}x the first network's prediction")
    print(f"pasting only the crop's footprint: {paste_gain}x faster than the full-frame paste")
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": args.name,
        "photos": len(photos),
        "calls_per_way": len(times["first network"]),
        "onnx_threads": args.threads,
        "cpus": os.cpu_count(),
        "median_ms_per_photo": medians,
        "ratio": ratio,
        "full_frame_paste_over_footprint": paste_gain,
    }
    target = REPO / "benchmarks" / "results" / "refine-latency.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
