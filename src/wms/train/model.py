"""Segmentation networks, chosen by name from a small registry.

A model maps an RGB batch (N, 3, H, W) scaled to [0, 1] to foreground logits (N, 1, H, W).
H and W must be divisible by 2**depth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from wms.errors import ConfigError


def _conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A plain U-Net: `depth` poolings, channels doubling from `base_channels`."""

    def __init__(self, base_channels: int = 16, depth: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        ch = in_channels
        for w in widths:
            self.down.append(_conv_block(ch, w))
            ch = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(ch, w, 2, stride=2))
            self.merge.append(_conv_block(2 * w, w))
            ch = w
        self.head = nn.Conv2d(ch, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


class FlipAveraged(nn.Module):
    """`net` with flip test-time augmentation: the mean of the logits of `x` and of its mirror image."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Two passes, not one over a doubled batch: the ONNX export keeps its batch size dynamic.
        return (self.net(x) + self.net(x.flip(-1)).flip(-1)) / 2


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"unet": UNet}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate an architecture by its registry name."""
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(
            f"unknown architecture {name!r}; train.architecture must be one of: {', '.join(ARCHITECTURES)}"
        ) from None
    return factory(**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
