"""Masks for new photos, at each photo's own size (after EXIF orientation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from wms.errors import DataError
from wms.train.preprocess import open_image
from wms.train.segmenter import Segmenter


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
    segmenter: Segmenter,
    paths: Sequence[Path],
    out: Path,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write `out/<stem>.png` (0/255) for each image; returns the written paths."""
    images = read_images(paths)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        for path, mask in zip(paths[start : start + batch_size], segmenter.predict_masks(chunk), strict=True):
            target = out / f"{path.stem}.png"
            Image.fromarray(mask.astype("uint8") * 255, mode="L").save(target)
            written.append(target)
        if progress:
            progress(len(chunk))
    return written
