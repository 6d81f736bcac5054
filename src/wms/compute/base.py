"""The compute interface: where training runs, started before and always stopped after."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ComputeStatus:
    """What a person needs to know about the training machine."""

    backend: str
    state: str
    detail: str = ""


class Compute(Protocol):
    """Start, stop and inspect the machine that trains."""

    name: str

    def start(self) -> ComputeStatus: ...
    def stop(self) -> ComputeStatus: ...
    def status(self) -> ComputeStatus: ...
