"""Uploads in, masks out: decoding that refuses hostile input before it costs memory.

Pillow's `Image.open` reads only the header, so the pixel count is known, and checked,
before any pixel is decoded: a 50-kB PNG that would unpack to gigabytes is refused here.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from wms.train.preprocess import PHOTO_FORMATS, orient_rgb


class InputError(Exception):
    """An upload the service refuses: an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def decode_upload(data: bytes, max_pixels: int) -> Image.Image:
    """An RGB image after EXIF orientation, or an InputError that says what is wrong."""
    if not data:
        raise InputError(400, "the uploaded file is empty; send a JPEG or PNG photo in the form field 'file'")
    try:
        img = Image.open(io.BytesIO(data), formats=PHOTO_FORMATS)
    except Image.DecompressionBombError as exc:
        raise InputError(413, f"image refused as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise InputError(
            415, f"the file is not an image this service reads; send one of {', '.join(PHOTO_FORMATS)}"
        ) from None
    except Exception as exc:  # a malformed header can raise nearly anything inside a plugin
        raise InputError(400, f"the image header cannot be read ({exc}): truncated or corrupt file") from None
    width, height = img.size
    if width < 1 or height < 1:
        raise InputError(400, f"the image is {width}x{height} pixels; it has nothing to segment")
    if width * height > max_pixels:
        raise InputError(
            413,
            f"the image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (serve.max_pixels); send a smaller photo",
        )
    try:
        img.load()
        return orient_rgb(img)
    except Image.DecompressionBombError as exc:
        raise InputError(413, f"image refused as a decompression bomb: {exc}") from None
    except Exception as exc:  # truncated data, bad EXIF, an unsupported pixel mode
        raise InputError(
            400, f"the {img.format} image cannot be decoded ({exc}); the file may be truncated or corrupt"
        ) from None


@dataclass(frozen=True)
class MaskSummary:
    """A predicted mask as the API returns it."""

    png: bytes
    width: int
    height: int
    foreground_fraction: float
    bbox: dict[str, int] | None  # the box around every foreground pixel; None when there is none

    def to_json(self) -> dict[str, Any]:
        return {
            "mask_png_base64": base64.b64encode(self.png).decode("ascii"),
            "width": self.width,
            "height": self.height,
            "foreground_fraction": round(self.foreground_fraction, 6),
            "bbox": self.bbox,
        }


def summarize_mask(mask: np.ndarray) -> MaskSummary:
    """PNG (0/255, the input's size), bounding box and foreground share of a boolean mask."""
    height, width = mask.shape
    buffer = io.BytesIO()
    # Level 1: a two-valued mask compresses well anyway, and level 6 costs milliseconds per request.
    pixels = np.multiply(mask, 255, dtype=np.uint8)  # one byte a pixel, no bool-to-int copy first
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    bbox = None
    if rows.size:
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
        bbox = {"x": x0, "y": y0, "width": x1 - x0 + 1, "height": y1 - y0 + 1}
    return MaskSummary(buffer.getvalue(), width, height, float(mask.mean()), bbox)
