"""Run a per-pair function over many pairs on every core, in input order."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext
from typing import TypeVar

from wms.errors import BackendError
from wms.sandbox import images

T = TypeVar("T")
R = TypeVar("R")

# Below this, starting worker processes costs more than the work itself.
PARALLEL_MIN_ITEMS = 16


def parallel_map(fn: Callable[[T], R], items: list[T], workers: int | None = None) -> Iterator[R]:
    """`map(fn, items)` across processes (serial for few items or one worker); `fn` must pickle."""
    n = workers if workers is not None else (os.cpu_count() or 1)
    if n <= 1 or len(items) < PARALLEL_MIN_ITEMS:
        yield from map(fn, items)
        return
    # Every caller decodes images: where that happens (wms.sandbox) is found out once, here, so a
    # "required" that cannot be met stops before any worker starts and "auto"'s warning is printed
    # once; each worker takes the answer, spawned ones too.
    settled = images.settle()
    with ProcessPoolExecutor(
        max_workers=n, mp_context=_context(), initializer=images.adopt, initargs=settled
    ) as pool:
        # Chunks amortise pickling (a pair pickles in microseconds, so a few suffice); small ones
        # keep progress smooth and stop one worker idling while another finishes a long last chunk.
        chunk = max(1, min(8, len(items) // (n * 8)))
        try:
            yield from pool.map(fn, items, chunksize=chunk)
        except BrokenProcessPool:
            raise BackendError(
                "a worker process stopped abruptly, killed by the system (most often for want of "
                "memory: `dmesg` says); free some memory and run again"
            ) from None


def _context() -> BaseContext | None:
    """How workers start: None for the platform default."""
    # fork, on Linux, because a worker then starts in milliseconds with everything already imported;
    # forkserver and spawn re-import the main module in every worker, and under the `wms` console
    # script that drags in torch (seconds per worker). Forking a process that runs threads (the
    # progress bar's refresher) is safe here because workers only decode, hash and write files: they
    # take no lock a parent thread could hold, and never print. Elsewhere keep the platform default
    # (macOS system frameworks are not fork-safe).
    return multiprocessing.get_context("fork") if sys.platform == "linux" else None
