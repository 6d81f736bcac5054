from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch

from wms.config import TrainSettings
from wms.data.pairs import find_pairs
from wms.train.loop import train
from wms.train.losses import LOSSES, bce_dice, focal_tversky, lovasz_hinge, soft_dice


def masks(seed: int, count: int = 3, size: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(count, 1, size, size, generator=gen) > 0.6).float()


def test_lovasz_hinge_is_one_minus_iou_at_a_hard_prediction() -> None:
    # Where a pixel is right its logit has margin 1 (hinge error 0), where wrong it is 0 (error 1):
    # there the Lovász extension equals the Jaccard loss of the predicted mask.
    target, wrong = masks(1), masks(2)
    predicted = torch.where(wrong.bool(), 1 - target, target)
    logits = torch.where(wrong.bool(), torch.zeros_like(target), 2 * target - 1)
    inter = (predicted * target).sum(dim=(1, 2, 3))
    union = ((predicted + target) > 0).float().sum(dim=(1, 2, 3))
    expected = (1 - inter / union).mean()
    assert lovasz_hinge(logits, target).item() == pytest.approx(expected.item(), abs=1e-6)


def test_soft_dice_is_the_dice_of_a_hard_prediction_and_bce_dice_adds_it_to_bce() -> None:
    target, predicted = masks(3), masks(4)
    logits = 20 * (2 * predicted - 1)  # sigmoid: 0 or 1 to within 1e-8
    inter = (predicted * target).sum(dim=(1, 2, 3))
    expected = (2 * inter + 1) / (predicted.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    assert soft_dice(logits, target).tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert bce_dice(logits, target).item() == pytest.approx((bce + 1 - expected.mean()).item(), abs=1e-5)
    # Where there is no window, every pixel it answers costs: 1 / (1 + predicted pixels).
    empty = torch.zeros(1, 1, 16, 16)
    assert soft_dice(logits[:1], empty).item() == pytest.approx(1 / (1 + predicted[0].sum().item()), abs=1e-5)


def test_focal_tversky_makes_a_missed_pixel_cost_more_than_a_false_one() -> None:
    target = torch.zeros(1, 1, 16, 16)
    target[..., 4:12, 4:12] = 1
    missed, extra = target.clone(), target.clone()
    missed[..., 4:6, 4:12] = 0  # 16 window pixels left out
    extra[..., 12:14, 4:12] = 1  # 16 pixels outside the window taken in
    as_logits = lambda mask: 12 * (2 * mask - 1)  # noqa: E731
    assert focal_tversky(as_logits(missed), target) > focal_tversky(as_logits(extra), target)


def test_every_loss_the_settings_accept_exists() -> None:
    assert set(get_args(TrainSettings.model_fields["loss"].annotation)) == set(LOSSES)
    assert set(get_args(TrainSettings.model_fields["finish_loss"].annotation)) == {"none", *LOSSES}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_loss_prefers_the_true_mask_and_has_gradients(name: str) -> None:
    target = masks(3)
    logits = torch.zeros_like(target, requires_grad=True)
    loss = LOSSES[name](logits, target)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    right, wrong = 6 * (2 * target - 1), 6 * (1 - 2 * target)
    assert LOSSES[name](right, target) < loss.item() < LOSSES[name](wrong, target)


@pytest.mark.parametrize("name", ["bce_lovasz", "focal_tversky"])
def test_training_with_another_loss_lowers_it(name: str, make_batch: Callable[..., Path]) -> None:
    pairs = find_pairs(make_batch(count=24)).pairs
    cfg = TrainSettings(image_size=32, base_channels=4, depth=2, batch_size=8, epochs=4, loss=name)
    losses = [h["train_loss"] for h in train(cfg, pairs[:18], pairs[18:]).history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_the_last_share_of_training_uses_the_finishing_loss(
    make_batch: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    for name in ("bce_dice", "bce_lovasz"):
        loss = LOSSES[name]
        monkeypatch.setitem(LOSSES, name, lambda *a, name=name, loss=loss: calls.append(name) or loss(*a))
    pairs = find_pairs(make_batch(count=24)).pairs
    cfg = TrainSettings(image_size=32, base_channels=4, depth=2, batch_size=8, epochs=4)
    train(cfg.model_copy(update={"finish_loss": "bce_lovasz", "finish_share": 0.5}), pairs[:18], pairs[18:])
    assert calls == ["bce_dice"] * 6 + ["bce_lovasz"] * 6  # 3 steps an epoch: the last 2 epochs
    calls.clear()
    train(cfg, pairs[:18], pairs[18:])  # finish_loss = "none": one loss throughout
    assert calls == ["bce_dice"] * 12
