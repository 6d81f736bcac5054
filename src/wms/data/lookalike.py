"""Photos that are the same picture in other bytes: re-encoded, resized, slightly recompressed.

Validation's exact check finds a photo stored twice; a photo re-saved by an editor or a
labelling tool (a corrected mask pushed under a new name) has other pixels, and its new id
may hash into another split, so one picture would be trained on and tested on. A 64-bit
perceptual hash (the sign of the low DCT frequencies of a 32x32 grey thumbnail) stays within
a few bits for such a copy. On the 830 real photos no two distinct pictures come within 8
bits (the nearest are 10 apart), so `NEAR_BITS` leaves a wide margin on both sides.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

NEAR_BITS = 4  # hashes this close (Hamming distance) are the same picture
THUMBNAIL_SIDE, _LOW = 32, 8
# How each EXIF orientation turns the stored pixels upright (as `ImageOps.exif_transpose` does).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    basis = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n))
    basis[0] /= np.sqrt(2)
    return basis * np.sqrt(2 / n)


_DCT = _dct_matrix(THUMBNAIL_SIDE)


def picture_hash(thumbnail: Image.Image, orientation: int = 1) -> int:
    """A 64-bit hash that copies of one picture share within `NEAR_BITS` bits, from its grey
    THUMBNAIL_SIDE-pixel thumbnail (`wms.sandbox.child.grey_thumbnail`, which validation's decoder
    makes beside the decode) of the stored pixels, turned as the EXIF `orientation` says."""
    if (turn := _UPRIGHT.get(orientation)) is not None:
        thumbnail = thumbnail.transpose(turn)  # a square thumbnail: turning it commutes with the resize
    grey = np.asarray(thumbnail, dtype=np.float64)
    low = (_DCT @ grey @ _DCT.T)[:_LOW, :_LOW].ravel()
    bits = low > np.median(low[1:])  # the DC term says only how bright the photo is
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def picture_hashes(thumbnail: Image.Image, orientation: int = 1) -> tuple[int, ...]:
    """The picture's hash as stored and, where its EXIF turns it, upright too: a copy saved
    turned (as preparation and labelling tools save one) matches the second, and a copy whose
    EXIF was dropped (a plain re-save) the first."""
    stored = picture_hash(thumbnail)
    return (stored,) if orientation not in _UPRIGHT else (stored, picture_hash(thumbnail, orientation))


def near_twins(pictures: list[tuple[int, ...]], max_bits: int = NEAR_BITS) -> list[tuple[int, int]]:
    """Index pairs (earlier, later) of pictures (each a tuple of hashes, `picture_hashes`) of
    which some hash of the later differs from some hash of the earlier in at most `max_bits`
    bits; each later index once, paired with the first earlier one."""
    if len(pictures) < 2:
        return []
    hashes = [h for picture in pictures for h in picture]
    counts = [len(p) for p in pictures]
    owners = np.repeat(np.arange(len(pictures)), counts)  # the picture of each hash
    starts = np.cumsum([0, *counts])  # picture i's hashes are rows starts[i] to starts[i + 1]
    as_bytes = np.array([h.to_bytes(8, "big") for h in hashes], dtype="S8")
    bits = np.unpackbits(np.frombuffer(as_bytes.tobytes(), dtype=np.uint8).reshape(-1, 8), axis=1)
    twins = []
    for later in range(1, len(pictures)):
        before, mine = bits[: starts[later]], bits[starts[later] : starts[later + 1]]
        distance = np.count_nonzero(before[None, :, :] != mine[:, None, :], axis=2).min(axis=0)
        close = np.flatnonzero(distance <= max_bits)
        if close.size:
            twins.append((int(owners[close[0]]), later))
    return twins
