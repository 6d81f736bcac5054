"""U-Nets on ImageNet encoders (MobileNetV2, ResNet-18), in plain torch.

    [train]
    architecture = "unet-mobilenet_v2"   # or "unet-resnet18"
    encoder_weights = "imagenet"         # torchvision's published weights; "none": random

segmentation-models-pytorch and timm would give these, but both need torchvision, which
cannot run beside this project's CPU torch build. So the encoders are written here with
torchvision's module names and shapes: its ImageNet state dicts load into `model.encoder`
as they are (less the classifier). The decoder upsamples from stride 32 and merges the
encoder's features at strides 16, 8, 4 and 2, as in smp's U-Net.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from wms.errors import TrainError

# torchvision's IMAGENET1K_V1 weights, and the classifier keys its encoders do not hold.
IMAGENET_URLS = {
    "mobilenet_v2": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
}
CLASSIFIER_KEYS = {"mobilenet_v2": "classifier.", "resnet18": "fc."}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Activations are not in place (torchvision's are): the ONNX export functionalizes every in-place
# op, and with MobileNetV2's 35 of them that took 40% longer.


def _conv_bn_act(
    in_ch: int,
    out_ch: int,
    kernel: int = 3,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] = nn.ReLU6,
) -> nn.Sequential:
    # torchvision's Conv2dNormActivation: a Sequential, so its keys are `0.weight`, `1.running_mean`, ...
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        act(),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand (1x1), depthwise 3x3, project (1x1, linear)."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = [_conv_bn_act(inp, hidden, kernel=1)] if expand_ratio != 1 else []
        layers += [
            _conv_bn_act(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2Encoder(nn.Module):
    """torchvision's `mobilenet_v2().features` (width 1.0), returning the features at strides 2..32."""

    channels = (16, 24, 32, 96, 1280)
    _taps = (1, 3, 6, 13, 18)  # the last block of `features` at each stride
    # (expansion, channels, blocks, first stride) of each stage, as in the paper and torchvision
    _setting = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_act(3, 32, stride=2)]
        inp = 32
        for t, c, n, s in self._setting:
            for i in range(n):
                layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(_conv_bn_act(inp, 1280, kernel=1))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._taps:
                out.append(x)
        return out


class BasicBlock(nn.Module):
    """ResNet-18's block: two 3x3 convolutions and a shortcut (1x1 when the shape changes)."""

    def __init__(self, inp: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inp != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inp, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18Encoder(nn.Module):
    """torchvision's `resnet18()` without `fc`, returning the features at strides 2..32."""

    channels = (64, 64, 128, 256, 512)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s2 = self.relu(self.bn1(self.conv1(x)))
        s4 = self.layer1(self.maxpool(s2))
        s8 = self.layer2(s4)
        s16 = self.layer3(s8)
        return [s2, s4, s8, s16, self.layer4(s16)]


ENCODERS: dict[str, type[MobileNetV2Encoder] | type[ResNet18Encoder]] = {
    "mobilenet_v2": MobileNetV2Encoder,
    "resnet18": ResNet18Encoder,
}


def _conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return _conv_bn_act(in_ch, out_ch, act=nn.ReLU)


class DecoderBlock(nn.Module):
    """Upsample by 2, concatenate the encoder's features at that stride, two conv-bn-relu."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(_conv_bn_relu(in_ch + skip_ch, out_ch), _conv_bn_relu(out_ch, out_ch))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.convs(x if skip is None else torch.cat([x, skip], dim=1))


class EncoderUNet(nn.Module):
    """A U-Net decoder on a named encoder; subclasses name it. Input (N, 3, H, W) in [0, 1].

    The decoder's widths are 8, 4, 2, 1 and 1 times `base_channels` from stride 16 up to the
    full size. `depth` is accepted and ignored: the encoder fixes five downsamplings.
    """

    encoder_name: ClassVar[str]
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, base_channels: int = 16, depth: int = 3, **_: Any) -> None:
        super().__init__()
        self.encoder = ENCODERS[self.encoder_name]()
        skips = [*reversed(self.encoder.channels[:-1]), 0]  # strides 16, 8, 4, 2, then none at 1
        widths = [base_channels * m for m in (8, 4, 2, 1, 1)]
        ins = [self.encoder.channels[-1], *widths[:-1]]
        self.decoder = nn.ModuleList(
            DecoderBlock(i, s, w) for i, s, w in zip(ins, skips, widths, strict=True)
        )
        self.head = nn.Conv2d(widths[-1], 1, 1)
        # Pretrained encoders expect ImageNet-normalised input; doing it here keeps the model's
        # input [0, 1] RGB everywhere (training, Segmenter, the ONNX export, serving).
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def input_multiple(**_: Any) -> int:
        """Input height and width must be multiples of this: the encoder downsamples 5 times."""
        return 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, x = self.encoder((x - self.mean) / self.std)
        for block, skip in zip(self.decoder, [*skips[::-1], None], strict=True):
            x = block(x, skip)
        return self.head(x)


class MobileNetV2UNet(EncoderUNet):
    """U-Net on torchvision's MobileNetV2 features (2.2 M encoder parameters)."""

    encoder_name = "mobilenet_v2"


class ResNet18UNet(EncoderUNet):
    """U-Net on torchvision's ResNet-18 (11.2 M encoder parameters)."""

    encoder_name = "resnet18"


def load_imagenet_encoder(model: EncoderUNet) -> None:
    """Load torchvision's ImageNet weights into `model.encoder`, downloading them once.

    The file is kept in torch's hub cache (`<torch.hub.get_dir()>/checkpoints`, moved by
    TORCH_HOME); on a machine without internet, place it there by hand.
    """
    name = model.encoder_name
    url = IMAGENET_URLS[name]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True)
    except Exception as exc:  # no network, a proxy's error page, a truncated file: all say the same
        raise TrainError(
            f"cannot get the ImageNet weights of {name} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); download {url} to {cached} "
            'or set train.encoder_weights = "none"'
        ) from None
    prefix = CLASSIFIER_KEYS[name]
    state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    try:
        model.encoder.load_state_dict(state)
    except RuntimeError:
        raise TrainError(
            f"{cached} does not hold torchvision's {name} weights (its keys or shapes differ); "
            f"delete it and download {url} again"
        ) from None
