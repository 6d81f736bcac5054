"""How training reports its progress: the CLI shows it as progress bars, a remote run as lines.

Free of torch, so that what only passes a reporter along (the pipeline, the remote trainer)
need not import the training loop.
"""

from __future__ import annotations

from typing import Protocol


class TrainReporter(Protocol):
    """Receives progress; the CLI shows it as a progress bar."""

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step_done(self, loss: float | None) -> None: ...
    def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def refine_pass_done(self, done: int, metrics: dict[str, float]) -> None: ...


class SilentReporter:
    """A reporter that shows nothing."""

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step_done(self, loss: float | None) -> None:
        pass

    def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def refine_pass_done(self, done: int, metrics: dict[str, float]) -> None:
        pass
