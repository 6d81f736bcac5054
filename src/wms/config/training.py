"""The [train] section: the network, how it is trained, and its optional second stage.

Its keys are read by `wms.train` (loop, augmentation, losses, the second stage) and checked
there against each other (`wms.train.loop.check_settings`): a size the network cannot take is
a bad setting before any run starts. `recipe` names a set of these keys (`wms.train.recipes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from wms.config.sections import Section
from wms.train.recipes import RECIPES


class TrainSettings(Section):
    recipe: str = Field(
        "",
        description="a named set of the keys below (wms.train.recipes): cpu or gpu; empty: none",
    )
    architecture: str = Field(
        "unet",
        description="unet (plain, scaled by base_channels and depth), or a U-Net on an ImageNet "
        "encoder: unet-mobilenet_v2, unet-resnet18 (written in plain torch: smp and timm need "
        "torchvision, which this torch build cannot run; image_size a multiple of 32; depth unused)",
    )
    encoder_weights: Literal["none", "imagenet"] = Field(
        "none",
        description="imagenet: start the encoder from torchvision's ImageNet weights, downloaded "
        "once into torch's hub cache (needs internet, or the file placed there); none: random",
    )
    epochs: int = Field(12, ge=0, description="0 logs an untrained model (useful to test the gate)")
    image_size: int = Field(128, ge=16, le=2048)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    base_channels: int = Field(16, ge=2)
    depth: int = Field(3, ge=1, le=6)
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: fp32 on CPU, bf16 on a GPU with it, else fp16 with loss scaling"
    )
    compile: bool = Field(False, description="torch.compile the model (slower start, faster steps)")
    devices: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        1, description="processes under DDP (wms train starts torchrun); auto: every visible GPU"
    )
    threshold: float = Field(0.5, gt=0, lt=1)
    tta: bool = Field(
        False,
        description="the model predicts the mean of the photo and its mirror image (kept in model.json: "
        "evaluate, predict, the gate and serving all use it); twice the inference time",
    )
    patience: int = Field(0, ge=0, description="stop after this many epochs without a better val Dice")
    max_minutes: float = Field(0, ge=0, description="training time budget; 0: none")
    augment_rotation: float = Field(10.0, ge=0, le=45, description="largest random rotation, in degrees")
    augment_quarter_turns: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of training images turned by a random 90, 180 or 270 degrees (0: none; "
        "true means 0.75, every quarter alike)",
    )
    augment_zoom: float = Field(
        0.0, ge=0, lt=1, description="largest random zoom in or out of a training image (0.3: 0.7x to 1.3x)"
    )
    early_scale: float = Field(
        1.0,
        gt=0,
        le=1,
        description="train the first half (of the steps or the time budget) at this share of image_size "
        "(0.67: 192 -> 128 px), then at image_size: more epochs in the same time; 1: off",
    )
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="validate and keep an exponential moving average of the weights, updated each step "
        "with this decay (0.995: about the last 200 steps); 0: off, the weights as trained",
    )
    loss: Literal["bce_dice", "bce_lovasz", "focal_tversky"] = Field(
        "bce_dice",
        description="bce_dice: BCE plus per-image soft Dice; bce_lovasz: BCE plus the Lovász hinge "
        "(per-image IoU); focal_tversky: missed window pixels cost more (wms.train.losses)",
    )
    finish_loss: Literal["none", "bce_dice", "bce_lovasz", "focal_tversky"] = Field(
        "none",
        description="train the last finish_share of training (of the steps or the time budget) with "
        "this loss instead (bce_lovasz: fine-tune for IoU, as Berman et al. do); none: off",
    )
    finish_share: float = Field(
        0.25, gt=0, lt=1, description="the share at the end of training that uses finish_loss"
    )
    refine_epochs: int = Field(
        0,
        ge=0,
        description="train a second stage after the first network: passes over the training photos' "
        "windows, cropped (wms.train.second_stage); 0: none, one network",
    )
    refine_minutes: float = Field(0, ge=0, description="the second stage's time budget; 0: none")
    refine_size: int = Field(160, ge=16, le=1024, description="the second stage's input side, px")
    refine_depth: int = Field(0, ge=0, le=6, description="the second stage's U-Net depth; 0: depth's")
    refine_margin: float = Field(1.4, ge=1, le=4, description="a crop's side / the found window's length")
    refine_align: bool = Field(True, description="turn each crop so that the window's long axis lies level")
    cache_dir: Path = Field(Path(".wms/cache"), description="decoded uint8 arrays, memory-mapped")
    cache_max_gb: float = Field(
        5, ge=0, description="the cache's size; least recently used arrays go first (0: only the run's own)"
    )
    export_onnx: bool = Field(True, description="log an ONNX export beside the weights (serving uses it)")

    @field_validator("augment_quarter_turns", mode="before")
    @classmethod
    def _turns_from_a_flag(cls, value: object) -> object:
        # Once a flag: on, each of the four quarters was drawn alike, so three in four were turned.
        flag = value.strip().lower() if isinstance(value, str) else value
        if isinstance(flag, bool) or flag in ("true", "false"):
            return 0.75 if flag in (True, "true") else 0.0
        return value

    @field_validator("recipe")
    @classmethod
    def _recipe_is_known(cls, value: str) -> str:
        if value and value not in RECIPES:
            raise ValueError(f'unknown recipe {value!r}; use one of: {", ".join(RECIPES)} (or "" for none)')
        return value
