"""Mixed precision chosen by the device: bf16 where it is supported, else fp16 with a scaler.

    train.precision = "auto" | "fp32" | "bf16" | "fp16"

`auto` gives bf16 on a GPU that supports it (Ampere and newer: A100, H100, L4, A10G) and on
a CPU with AMX bf16 tiles (Intel Sapphire Rapids and newer: there oneDNN's bf16 convolutions
train the CPU recipe's U-Net about 1.5x faster than fp32), fp16 with `torch.amp.GradScaler` on
a GPU without bf16 (the T4 of a g4dn instance, V100), and fp32 on other CPUs, where bf16 is
emulated and slower. fp16's
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
    """Whether the GPU computes in bf16 in hardware (compute capability 8 and up).

    Not torch's default answer: `is_bf16_supported()` also says yes where bf16 is only emulated,
    as on a T4, which would then train slower than in fp16."""
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))


def cpu_has_bf16_tiles() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX), where bf16 autocast pays off."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, hence the guard
    return bool(probe and probe())


def choose_precision(wanted: str, device: str, bf16_supported: Callable[[], bool] | None = None) -> str:
    """The precision to train in: `wanted`, or for `auto` what the device does best."""
    if wanted not in PRECISIONS:
        raise TrainError(f"train.precision={wanted!r}; use one of: {', '.join(PRECISIONS)}")
    if wanted != "auto":
        return wanted
    cuda = device.startswith("cuda")
    if bf16_supported is None:
        bf16_supported = cuda_supports_bf16 if cuda else cpu_has_bf16_tiles
    if bf16_supported():
        return "bf16"
    return "fp16" if cuda else "fp32"


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
