"""Segmentation networks, chosen by name from a small registry.

A model maps an RGB batch (N, 3, H, W) scaled to [0, 1] to foreground logits (N, 1, H, W).
H and W must be multiples of `input_multiple(name, ...)`: 2**depth for "unet", 32 for the
U-Nets on ImageNet encoders (wms.train.encoders).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from wms.errors import ConfigError
from wms.train.encoders import EncoderUNet, MobileNetV2UNet, ResNet18UNet, load_imagenet_encoder


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

    @staticmethod
    def input_multiple(depth: int = 3, **_: Any) -> int:
        """Input height and width must be multiples of this: one halving per level."""
        return int(2**depth)

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


class Architecture(Protocol):
    """What the registry holds: a network class, built from `base_channels` and `depth`."""

    def __call__(self, *, base_channels: int = ..., depth: int = ...) -> nn.Module: ...
    def input_multiple(self, *, depth: int = ...) -> int: ...


ARCHITECTURES: dict[str, Architecture] = {
    "unet": UNet,
    "unet-mobilenet_v2": MobileNetV2UNet,
    "unet-resnet18": ResNet18UNet,
}


def _architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(
            f"unknown architecture {name!r}; train.architecture must be one of: {', '.join(ARCHITECTURES)}"
        ) from None


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate an architecture by its registry name."""
    return _architecture(name)(**kwargs)


def input_multiple(name: str, **kwargs: Any) -> int:
    """The number an architecture's input height and width must be a multiple of."""
    return _architecture(name).input_multiple(**kwargs)


def _has_encoder(architecture: Architecture) -> bool:
    return isinstance(architecture, type) and issubclass(architecture, EncoderUNet)


def check_encoder_weights(name: str, weights: str) -> None:
    """Raise ConfigError when `weights` asks for pretrained weights and `name` has no encoder."""
    if weights != "none" and not _has_encoder(_architecture(name)):
        encoders = ", ".join(n for n, a in ARCHITECTURES.items() if _has_encoder(a))
        raise ConfigError(
            f"train.encoder_weights={weights!r} needs an architecture with an encoder and {name!r} has "
            f'none; set train.architecture to one of {encoders}, or train.encoder_weights = "none"'
        )


def load_encoder_weights(model: nn.Module, weights: str) -> None:
    """Put pretrained weights (`imagenet`) into a freshly built model's encoder; `none` leaves it.

    Only training calls this: a saved model's weights, encoder included, are in its model.pt.
    """
    if weights == "none":
        return
    if not isinstance(model, EncoderUNet):
        raise ConfigError(f"train.encoder_weights={weights!r} needs an architecture with an encoder")
    load_imagenet_encoder(model)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
