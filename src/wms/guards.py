"""What keeps a long run from leaving paid resources behind: signals as exceptions, and a heartbeat.

`signals_raise()` turns SIGINT/SIGTERM into `Interrupted`, so the `finally` blocks that
stop compute run even when CI cancels the job. `signals_held()` keeps them out of steps that
must happen together (a checkpoint and the report of its epoch). `Heartbeat` renews leases
(the pipeline lock, the compute lease) from a background thread while a stage runs for hours.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, so no `except Exception` swallows it."""

    exit_code = 130

    def __init__(self, signame: str) -> None:
        super().__init__(f"interrupted by {signame}")
        self.signame = signame


@contextmanager
def signals_raise(on_repeat: Callable[[str], None] | None = None) -> Iterator[None]:
    """Raise `Interrupted` on the first SIGINT/SIGTERM inside the block; restore the old handlers after.

    A second signal does not raise again: by then the code is releasing resources, and
    breaking that off would leave them running. Outside the main thread this does nothing
    (Python only delivers signals there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal raised
        name = signal.Signals(signum).name
        if raised:
            if on_repeat is not None:
                on_repeat(name)
            return
        raised = True
        raise Interrupted(name)

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back until the block ends, then deliver them to the handlers from before.

    For steps that must not be split: a job stopped between saving a checkpoint and reporting
    its epoch would go on after an epoch that nobody saw. A second signal inside the block is
    not held: it goes on at once, as if the block were not there. Outside the main thread this
    does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous: dict[signal.Signals, Any] = {}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    def handler(signum: int, _frame: FrameType | None) -> None:
        if held:  # asked twice: stop holding, and let the first one through now
            restore()
            signal.raise_signal(held.pop())
            return
        held.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        restore()
        if held:
            signal.raise_signal(held.pop())


class Heartbeat:
    """Calls `beat` every `interval` seconds on a daemon thread while the block runs.

    A failing beat is reported through `on_error` and retried at the next interval; the
    leases it renews have margin for a few misses.
    """

    def __init__(
        self, interval: float, beat: Callable[[], None], on_error: Callable[[str], None] | None = None
    ) -> None:
        self.interval = interval
        self.beat = beat
        self.on_error = on_error
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="wms-heartbeat", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
                self.beats += 1
            except Exception as exc:  # a missed renewal is retried; the run must go on
                if self.on_error is not None:
                    self.on_error(f"lease renewal failed ({exc}); retrying in {self.interval:.0f} s")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
