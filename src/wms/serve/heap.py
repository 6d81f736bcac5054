"""Giving back to the system the memory a finished prediction freed (glibc's malloc only).

glibc keeps freed memory in its heaps for reuse, and a prediction frees hundreds of MB in
pieces under its mmap threshold (which rises to 32 MB as large blocks are freed), from the
worker threads' own arenas. `wms serve` with the gpu recipe's U-Net held 729-911 MiB, three
runs, after two 39.9-megapixel photos at once (three rounds), against 222-231 MiB before the
first: over the pod's 448Mi memory request, which the scheduler counts on. With malloc_trim(0)
once the last prediction under way has ended it held 219-262 MiB; MALLOC_ARENA_MAX=2 alone,
558-638 MiB, and with the trim, 219-236 (no better than the trim alone). Peak memory is the
same either way (1281-1343 MiB). Elsewhere (musl, macOS) there is no malloc_trim: nothing is done.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the process already has loaded
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Return the free memory at the top and in the middle of every malloc arena to the system."""
    if _TRIM is not None:
        _TRIM(0)
