"""The one preprocessing path shared by training, evaluation, prediction and serving.

Keeping it in one place means a model never sees pixels prepared differently at
inference than in training.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wms.errors import DataError
from wms.sandbox.images import Header, decode_file, read_header

# What Pillow raises for a file that is no readable image: not one at all, truncated, a broken
# PNG chunk, or more pixels than it decodes (a decompression bomb).
UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError)

# The formats a photo is decoded as, whatever its name says: what cameras, phones (their MPO files
# are JPEG) and browsers write. By its content alone Pillow would pick any of its forty formats,
# EPS among them, which runs Ghostscript on the file's PostScript: on the GPU instance that would be
# a pushed file's program running beside the instance's credentials.
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")


# The ranges an integer or float image without a fixed one is read in: the smallest that holds
# its values (0-1 is the float convention, 0-65535 what a 16-bit PNG decodes to as mode I).
USUAL_RANGES = (1.0, 255.0, 65535.0)


def to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float image as 8-bit grayscale (L); any other image as it is.

    Pillow's own conversion clips these at 255 (a 16-bit photo comes out almost white), so they
    are scaled first. 16-bit images (I;16) by their full range: v / 257, so a 16-bit copy of an
    8-bit photo gives back the same pixels. Modes I and F have no fixed range: they are read in
    the smallest of 0-1 (F only), 0-255 and 0-65535 that holds their values, and an image with
    negative values or values over 65535 is stretched from its own minimum to its maximum.
    """
    if img.mode.startswith("I;16"):
        low, top = 0.0, 65535.0
    elif img.mode in ("I", "F"):
        extrema: Any = img.getextrema()  # one band: (min, max)
        low, top = float(extrema[0]), float(extrema[1])
        ranges = [r for r in USUAL_RANGES if img.mode == "F" or r > 1]
        if low >= 0 and top <= ranges[-1]:
            low, top = 0.0, next(r for r in ranges if top <= r)
        elif top <= low:
            top = low + 1
    else:
        return img
    factor = 255.0 / (top - low)
    return img.point(lambda v: (v - low) * factor + 0.5).convert("L")


def orient_rgb(img: Image.Image) -> Image.Image:
    """An opened image as RGB with its EXIF orientation applied (the pixels a person sees).

    High-bit-depth and float images are scaled to 8 bits first (`to_8bit`).
    """
    turned = to_8bit(ImageOps.exif_transpose(img))  # a new image, even where nothing turns
    return turned if turned.mode == "RGB" else turned.convert("RGB")  # no second copy of a big photo


@contextmanager
def _named(path: Path) -> Iterator[None]:
    """Turns what a decoder raises for `path` into a DataError that names it."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except Image.DecompressionBombError as exc:
        why = str(exc).rstrip(".")
        raise DataError(f"{path} is too large to decode: {why}; downscale it or leave it out") from None
    except UnidentifiedImageError:
        formats = ", ".join(PHOTO_FORMATS)
        why = f"it is none of {formats}; save it again as JPEG or PNG"
        raise DataError(f"cannot read {path} as an image: {why}") from None
    except UNREADABLE as exc:
        raise DataError(f"cannot read {path} as an image ({exc}); save it again as JPEG or PNG") from None


@contextmanager
def image_file(path: Path) -> Iterator[Image.Image]:
    """The image in `path`, decoded as one of PHOTO_FORMATS (by `wms.sandbox.images`, in its
    confined child where it can run); a file that cannot be read as one is a DataError that names it."""
    with _named(path):
        img = decode_file(path, PHOTO_FORMATS)
    yield img


def image_header(path: Path) -> Header:
    """The format, mode and size the header of `path` gives, pixels undecoded; DataError as `image_file`."""
    with _named(path):
        return read_header(path, PHOTO_FORMATS)


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
