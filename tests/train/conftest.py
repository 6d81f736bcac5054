"""Fixtures shared by the training tests."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Callable[[], int]]:
    """`host_reads("loop.py")` starts counting the tensor-to-host reads (`.item()`, `float()`)
    that module of `wms.train` makes, itself or through its `RunningLoss`, and returns the count
    so far as a function. On a GPU each such read waits for the device."""
    item, to_float = torch.Tensor.item, torch.Tensor.__float__
    helper = str(Path("wms", "train", "losses.py"))

    def start(module: str) -> Callable[[], int]:
        ours = str(Path("wms", "train", module))
        reads = 0

        def count() -> None:  # frames: count, the patched method, its caller, the caller's caller
            nonlocal reads
            caller, above = sys._getframe(2).f_code.co_filename, sys._getframe(3).f_code.co_filename
            reads += caller.endswith(ours) or (caller.endswith(helper) and above.endswith(ours))

        def counted_item(self: torch.Tensor) -> object:
            count()
            return item(self)

        def counted_float(self: torch.Tensor) -> float:
            count()
            return to_float(self)

        monkeypatch.setattr(torch.Tensor, "item", counted_item)
        monkeypatch.setattr(torch.Tensor, "__float__", counted_float)
        return lambda: reads

    return start
