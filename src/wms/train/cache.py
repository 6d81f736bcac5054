"""Decode a dataset once into uint8 arrays on disk, memory-mapped on every later run.

Decoding JPEG/PNG is the slow part of an epoch; with the arrays cached the loop reads
pixels straight from the page cache. The cache key covers every file's name, size and
modification time plus the training size, so changed data is never served stale.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wms.data.pairs import Pair
from wms.train.preprocess import image_to_array, mask_to_array, open_image, open_mask


def cache_key(pairs: Sequence[Pair], size: int) -> str:
    """A key that changes when any file or the size changes."""
    digest = hashlib.sha256(f"v1:{size}".encode())
    for pair in pairs:
        for path in (pair.image, pair.mask):
            stat = path.stat()
            digest.update(f"{pair.id}\0{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def decode(pairs: Sequence[Pair], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 3, S, S) and masks bool (N, S, S), decoded now."""
    images = np.empty((len(pairs), 3, size, size), dtype=np.uint8)
    masks = np.empty((len(pairs), size, size), dtype=bool)
    for i, pair in enumerate(pairs):
        images[i] = image_to_array(open_image(pair.image), size)
        masks[i] = mask_to_array(open_mask(pair.mask), size)
    return images, masks


def load_arrays(
    pairs: Sequence[Pair], size: int, cache_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The decoded pairs, from the cache when it has them (memory-mapped, read-only)."""
    if cache_dir is None or not pairs:
        return decode(pairs, size)
    key = cache_key(pairs, size)
    images_path, masks_path = cache_dir / f"{key}.images.npy", cache_dir / f"{key}.masks.npy"
    if not (images_path.is_file() and masks_path.is_file()):
        images, masks = decode(pairs, size)
        cache_dir.mkdir(parents=True, exist_ok=True)
        for path, array in ((images_path, images), (masks_path, masks)):
            # Write aside and rename, so a crash never leaves a truncated array behind.
            tmp = path.with_name(f".{uuid.uuid4().hex[:8]}.tmp.npy")
            np.save(tmp, array)
            tmp.replace(path)
    return np.load(images_path, mmap_mode="r"), np.load(masks_path, mmap_mode="r")
