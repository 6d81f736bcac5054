"""Mixed precision chosen by the device: bf16 where it is supported, else fp16 with a scaler.

    train.precision = "auto" | "fp32" | "bf16" | "fp16"

`auto` gives fp32 on the CPU (repeatable runs, and CPU autocast is rarely faster), bf16 on a
GPU that supports it (Ampere and newer: A100, H100, L4, A10G), and fp16 with
`torch.amp.GradScaler` on one that does not (the T4 of a g4dn instance, V100). fp16's
narrow range underflows small gradients to zero without loss scaling; bf16 has fp32's range
and needs none. An explicit value is used as given, on any device (fp16 and bf16 also run on
the CPU, slowly, which is how the tests exercise the scaler).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from wms.errors import TrainError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cuda_supports_bf16() -> bool:
    """The device capability the choice depends on (tests fake it here, at the boundary)."""
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def choose_precision(
    wanted: str, device: str, bf16_supported: Callable[[], bool] = cuda_supports_bf16
) -> str:
    """The precision to train in: `wanted`, or for `auto` what the device does best."""
    if wanted not in PRECISIONS:
        raise TrainError(f"train.precision={wanted!r}; use one of: {', '.join(PRECISIONS)}")
    if wanted != "auto":
        return wanted
    if not device.startswith("cuda"):
        return "fp32"
    return "bf16" if bf16_supported() else "fp16"


@dataclass(frozen=True)
class Precision:
    """Autocast and (for fp16) loss scaling for one device."""

    name: str  # fp32 | bf16 | fp16
    device: str  # "cpu", "cuda" or "cuda:N"

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self) -> Any:
        """The context the forward pass runs in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only for fp16 (a disabled one passes calls straight through)."""
        return torch.amp.GradScaler(self.device.split(":")[0], enabled=self.name == "fp16")
