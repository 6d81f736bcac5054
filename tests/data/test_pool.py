"""Work spread over worker processes: a worker the system kills is one clear error, not a traceback."""

from __future__ import annotations

import os
import signal

import pytest

from wms.data._pool import PARALLEL_MIN_ITEMS, parallel_map
from wms.errors import BackendError


def _killed_at_five(item: int) -> int:
    if item == 5:  # as the kernel's out-of-memory killer ends a worker decoding a large set
        os.kill(os.getpid(), signal.SIGKILL)
    return item * 2


def test_results_come_back_in_input_order() -> None:
    items = list(range(PARALLEL_MIN_ITEMS * 2))
    assert list(parallel_map(abs, [-i for i in items], workers=2)) == items


def test_a_worker_the_system_kills_is_an_error_that_says_so() -> None:
    with pytest.raises(BackendError, match=r"^a worker process stopped abruptly, killed by the system"):
        list(parallel_map(_killed_at_five, list(range(PARALLEL_MIN_ITEMS * 2)), workers=2))
