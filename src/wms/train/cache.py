"""Decode a dataset once into uint8 arrays on disk, memory-mapped on every later run.

Decoding JPEG/PNG is the slow part of an epoch; with the arrays cached the loop reads
pixels straight from the page cache. The cache key covers every file's name, size and
modification time plus the training size, so changed data is never served stale.

Every new dataset version (and, on the GPU instance, every job's fresh copy of the data) is
a new key, so the cache would grow by a run's arrays with every batch: after each load the
least recently used entries go until the cache holds at most `train.cache_max_gb`, the
entry just used always stays. A cache that cannot be written (a full disk) costs the
speed-up, not the run, and a partial file a killed run left goes at a later eviction.

The arrays are keyed by no pair, so a photo `wms data forget` erased from the store would stay
in them on every machine that trained on it until evicted: a pipeline's training first hands
the store's erased photos to `forget_erased`, which empties the cache once for each new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from contextlib import suppress
from functools import partial
from pathlib import Path

import numpy as np

from wms.config import TrainSettings
from wms.data._pool import parallel_map
from wms.data.pairs import Pair
from wms.train.preprocess import image_to_array, mask_to_array, open_image, open_mask

# A cache file being written is younger than this; an older one was left by a run that was killed.
STALE_WRITE_SECONDS = 3600
ERASED_SEEN = "erased.json"  # the erased photos (sha256) the cache was emptied for


def cache_bytes(cfg: TrainSettings) -> int:
    """train.cache_max_gb in bytes."""
    return int(cfg.cache_max_gb * 1024**3)


def cache_key(pairs: Sequence[Pair], size: int) -> str:
    """A key that changes when any file or the size changes."""
    digest = hashlib.sha256(f"v1:{size}".encode())
    for pair in pairs:
        for path in (pair.image, pair.mask):
            stat = path.stat()
            digest.update(f"{pair.id}\0{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _decode_pair(pair: Pair, size: int) -> tuple[np.ndarray, np.ndarray]:
    return image_to_array(open_image(pair.image), size), mask_to_array(open_mask(pair.mask), size)


def decode(
    pairs: Sequence[Pair],
    size: int,
    workers: int | None = None,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 3, S, S) and masks bool (N, S, S), decoded now by `workers` processes
    (None: one per core), each with its own confined decoder (wms.sandbox); into `out` where
    given (e.g. arrays mapped from files, `_reserve`), else into new arrays in memory."""
    if out is None:
        images_shape, masks_shape = _shapes(len(pairs), size)
        out = np.empty(images_shape, np.uint8), np.empty(masks_shape, bool)
    images, masks = out
    for i, (image, mask) in enumerate(parallel_map(partial(_decode_pair, size=size), list(pairs), workers)):
        images[i], masks[i] = image, mask
    for array in out:
        if isinstance(array, np.memmap):
            array.flush()
    return images, masks


def _shapes(count: int, size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shapes of `count` pairs' images (N, 3, S, S) and masks (N, S, S)."""
    return (count, 3, size, size), (count, size, size)


def _reserve(tmps: tuple[Path, Path], count: int, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Zeroed arrays for `count` pairs mapped from the new .npy files `tmps`, with their room on
    disk taken now, so that a full disk is an OSError here and never a crash (SIGBUS) once pixels
    are written into a mapped file the disk has no room for. None (and no file) where the cache
    cannot hold them: a full disk, or a folder it cannot write."""
    try:
        tmps[0].parent.mkdir(parents=True, exist_ok=True)
        images_shape, masks_shape = _shapes(count, size)
        arrays = (
            np.lib.format.open_memmap(tmps[0], mode="w+", dtype=np.uint8, shape=images_shape),
            np.lib.format.open_memmap(tmps[1], mode="w+", dtype=bool, shape=masks_shape),
        )
        if hasattr(os, "posix_fallocate"):  # Linux; elsewhere the files stay sparse
            for tmp in tmps:
                with tmp.open("r+b") as file:
                    os.posix_fallocate(file.fileno(), 0, tmp.stat().st_size)
    except OSError:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        return None
    return arrays


def _beside(path: Path) -> Path:
    """A new file's name beside `path` (a write in progress: `evict` removes one left too long)."""
    return path.with_name(f".{uuid.uuid4().hex[:8]}.tmp.npy")


def load_arrays(
    pairs: Sequence[Pair],
    size: int,
    cache_dir: Path | None = None,
    max_bytes: int | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The decoded pairs, from the cache when it has them (memory-mapped, read-only); then the
    cache's least recently used entries go until it holds at most `max_bytes` (None: no limit).

    A new entry is written into the cache as its pairs are decoded, not held in memory first: a
    set larger than the machine's memory (about 1 MB a pair at 512 px) decodes too."""
    if cache_dir is None or not pairs:
        return decode(pairs, size, workers)
    key = cache_key(pairs, size)
    images_path, masks_path = cache_dir / f"{key}.images.npy", cache_dir / f"{key}.masks.npy"
    if not (images_path.is_file() and masks_path.is_file()):
        tmps = _beside(images_path), _beside(masks_path)
        try:
            out = _reserve(tmps, len(pairs), size)
            if out is None:  # the run goes on without the cache
                if cache_dir.is_dir() and max_bytes is not None:
                    evict(cache_dir, max_bytes, keep=key)  # and the next run may find room again
                return decode(pairs, size, workers)
            decode(pairs, size, workers, out)
            del out  # the mappings: the files are read again below, read-only
            for tmp, path in zip(tmps, (images_path, masks_path), strict=True):
                tmp.replace(path)  # whole or not at all: a killed run leaves only a .tmp
        finally:
            for tmp in tmps:
                tmp.unlink(missing_ok=True)
    else:
        for path in (images_path, masks_path):
            os.utime(path)  # the entry's last use, which eviction goes by
    arrays = np.load(images_path, mmap_mode="r"), np.load(masks_path, mmap_mode="r")
    if max_bytes is not None:
        evict(cache_dir, max_bytes, keep=key)
    return arrays


def evict(cache_dir: Path, max_bytes: int, keep: str) -> list[str]:
    """Remove the least recently used entries but `keep` until the cache holds at most
    `max_bytes`; the keys removed. A process still reading a removed entry keeps its mapping."""
    entries: dict[str, list[tuple[Path, os.stat_result]]] = {}
    for path in cache_dir.glob("*.npy"):
        if path.name.startswith("."):  # a write in progress, or one a killed run left behind
            with suppress(FileNotFoundError):
                if time.time() - path.stat().st_mtime > STALE_WRITE_SECONDS:
                    path.unlink()
            continue
        with suppress(FileNotFoundError):  # another run's eviction got there first
            entries.setdefault(path.name.split(".", 1)[0], []).append((path, path.stat()))
    total = sum(st.st_size for files in entries.values() for _, st in files)
    removed = []
    for key in sorted(entries, key=lambda k: max(st.st_mtime for _, st in entries[k])):
        if total <= max_bytes:
            break
        if key == keep:
            continue
        for path, st in entries[key]:
            with suppress(OSError):  # gone already, or mapped where that forbids it (Windows): next time
                path.unlink()
            total -= st.st_size
        removed.append(key)
    return removed


def forget_erased(cache_dir: Path, erased: Iterable[str]) -> int:
    """Empty the cache when the store erased a photo (sha256 in `erased`) it has not been emptied
    for yet; how many arrays went. The photos seen are kept beside the arrays."""
    seen_file = cache_dir / ERASED_SEEN
    try:
        seen = set(json.loads(seen_file.read_text()))
    except (OSError, ValueError, TypeError):  # none yet, or damaged: empty it once more
        seen = set()
    new = set(erased) - seen
    if not new:
        return 0
    arrays = sorted(cache_dir.glob("*.npy")) if cache_dir.is_dir() else []
    for path in arrays:
        with suppress(FileNotFoundError):
            path.unlink()
    with suppress(OSError):  # a cache it cannot write: emptied again next time
        cache_dir.mkdir(parents=True, exist_ok=True)
        seen_file.write_text(json.dumps(sorted(seen | new)))
    return len(arrays)
