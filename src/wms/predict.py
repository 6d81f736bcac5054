"""Masks for new photos, at each photo's own size (after EXIF orientation), and how sure each is."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from wms.errors import DataError, UsageError
from wms.inbox import scan_photos
from wms.train.preprocess import image_header, open_image
from wms.train.spec import ModelSpec
from wms.uncertainty import Assessment, assess


class ProbabilityModel(Protocol):
    """What predicting needs: the ONNX export (OnnxSegmenter, what `wms serve` runs) or torch (Segmenter)."""

    spec: ModelSpec

    def probability_maps(self, images: list[Image.Image]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class Predicted:
    """One photo's mask file and what `wms predict --json` reports about it."""

    image: Path
    mask: Path
    width: int
    height: int
    foreground_fraction: float
    uncertainty: Assessment

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": str(self.image),
            "mask": str(self.mask),
            "width": self.width,
            "height": self.height,
            "foreground_fraction": round(self.foreground_fraction, 6),
            "uncertainty": self.uncertainty.to_dict(),
        }


def expand_folders(paths: Sequence[Path]) -> list[Path]:
    """Each folder replaced by its photos (those directly in it, or in its images/), by name."""
    expanded = []
    for path in paths:
        if not path.is_dir():
            expanded.append(path)
            continue
        scan = scan_photos(path)
        if not scan.photos:
            raise UsageError(f"no photos to segment: {scan.summary()}; name photos or a folder of them")
        expanded += [photo.path for photo in scan.photos]
    return expanded


def check_images(paths: Sequence[Path]) -> None:
    """Read every photo's header first, so a missing or non-image file stops the run before any work."""
    for path in paths:
        image_header(path)


def predict_files(
    segmenter: ProbabilityModel,
    paths: Sequence[Path],
    out: Path,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[Predicted]:
    """Write `out/<stem>.png` (0/255) for each image; returns what was written, with its uncertainty.

    Photos are decoded a batch at a time, so a folder of thousands fits in memory. The masks
    go to a staging folder and move to `out` once every photo has one: a photo that fails to
    decode halfway leaves `out` as it was.
    """
    seen: dict[str, Path] = {}
    for path in paths:
        if (other := seen.setdefault(path.stem, path)) != path:
            raise DataError(
                f"{other} and {path} would both write {path.stem}.png; "
                "predict them into separate --out folders"
            )
    check_images(paths)
    threshold = segmenter.spec.threshold
    done = []
    with tempfile.TemporaryDirectory(prefix="wms-predict-") as staging:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            probs = segmenter.probability_maps([open_image(path) for path in chunk])
            for path, prob in zip(chunk, probs, strict=True):
                mask = prob > threshold  # float32 against the threshold, as predict_masks compares
                Image.fromarray(mask.astype("uint8") * 255, mode="L").save(Path(staging, f"{path.stem}.png"))
                height, width = mask.shape
                foreground, sureness = float(mask.mean()), assess(prob, threshold)
                done.append(Predicted(path, out / f"{path.stem}.png", width, height, foreground, sureness))
            if progress:
                progress(len(chunk))
        out.mkdir(parents=True, exist_ok=True)
        for predicted in done:
            shutil.move(Path(staging, predicted.mask.name), predicted.mask)
    return done
