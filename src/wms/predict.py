"""Masks for new photos, at each photo's own size (after EXIF orientation), and how sure each is."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from wms.errors import DataError
from wms.inbox import scan_photos
from wms.train.preprocess import open_image
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
            raise DataError(f"no photos to segment: {scan.summary()}; name photos or a folder of them")
        expanded += [photo.path for photo in scan.photos]
    return expanded


def read_images(paths: Sequence[Path]) -> list[Image.Image]:
    """Open every image first, so one bad file stops the run before anything is written."""
    images = []
    for path in paths:
        try:
            images.append(open_image(path))
        except FileNotFoundError:
            raise DataError(f"{path} does not exist") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"cannot read {path} as an image ({exc}); pass JPEG or PNG photos") from None
    return images


def predict_files(
    segmenter: ProbabilityModel,
    paths: Sequence[Path],
    out: Path,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[Predicted]:
    """Write `out/<stem>.png` (0/255) for each image; returns what was written, with its uncertainty."""
    seen: dict[str, Path] = {}
    for path in paths:
        if (other := seen.setdefault(path.stem, path)) != path:
            raise DataError(
                f"{other} and {path} would both write {path.stem}.png; "
                "predict them into separate --out folders"
            )
    images = read_images(paths)
    out.mkdir(parents=True, exist_ok=True)
    threshold = segmenter.spec.threshold
    done = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        probs = segmenter.probability_maps(chunk)
        for path, prob in zip(paths[start : start + batch_size], probs, strict=True):
            mask = prob > threshold  # float32 against the threshold, as predict_masks compares
            target = out / f"{path.stem}.png"
            Image.fromarray(mask.astype("uint8") * 255, mode="L").save(target)
            height, width = mask.shape
            done.append(Predicted(path, target, width, height, float(mask.mean()), assess(prob, threshold)))
        if progress:
            progress(len(chunk))
    return done
