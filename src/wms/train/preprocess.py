"""The one preprocessing path shared by training, evaluation, prediction and serving.

Keeping it in one place means a model never sees pixels prepared differently at
inference than in training.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wms.errors import DataError

# What Pillow raises for a file that is no readable image: not one at all, truncated, a broken
# PNG chunk, or more pixels than it decodes (a decompression bomb).
UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError)


def orient_rgb(img: Image.Image) -> Image.Image:
    """An opened image as RGB with its EXIF orientation applied (the pixels a person sees)."""
    return ImageOps.exif_transpose(img).convert("RGB")


@contextmanager
def image_file(path: Path) -> Iterator[Image.Image]:
    """`Image.open(path)`; a file that cannot be read as an image is a DataError that names it."""
    try:
        with Image.open(path) as img:
            yield img
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except Image.DecompressionBombError as exc:
        why = str(exc).rstrip(".")
        raise DataError(f"{path} is too large to decode: {why}; downscale it or leave it out") from None
    except UNREADABLE as exc:
        raise DataError(f"cannot read {path} as an image ({exc}); save it again as JPEG or PNG") from None


def open_image(path: Path) -> Image.Image:
    """An RGB image with its EXIF orientation applied."""
    with image_file(path) as img:
        return orient_rgb(img)


def open_mask(path: Path) -> Image.Image:
    """A single-channel mask with its EXIF orientation applied."""
    with image_file(path) as img:
        return ImageOps.exif_transpose(img).convert("L")


def image_to_array(image: Image.Image, size: int) -> np.ndarray:
    """uint8 array (3, size, size): the model input before scaling to [0, 1]."""
    resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).copy()


def mask_to_array(mask: Image.Image, size: int | None = None) -> np.ndarray:
    """bool array (H, W): foreground where the mask is above mid-grey (JPEG masks are not binary)."""
    if size is not None:
        mask = mask.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(mask, dtype=np.uint8) > 127


def scale(batch_uint8: np.ndarray) -> np.ndarray:
    """uint8 pixels to the float32 range the model is trained on."""
    return batch_uint8.astype(np.float32) / 255.0
