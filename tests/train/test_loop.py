from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.conftest import interrupted_after

from wms.config import TrainSettings
from wms.data.pairs import find_pairs
from wms.errors import ConfigError, TrainError
from wms.train.checkpoint import epochs_held
from wms.train.loop import train
from wms.train.segmenter import Segmenter

TINY = {"image_size": 32, "base_channels": 4, "depth": 2, "batch_size": 8, "epochs": 3}


@pytest.fixture
def pairs(make_batch: Callable[..., Path]) -> list:
    return find_pairs(make_batch(count=24)).pairs


def test_training_lowers_the_loss(pairs: list) -> None:
    result = train(TrainSettings(**TINY | {"epochs": 4}), pairs[:18], pairs[18:])
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 4
    assert losses[-1] < losses[0]
    assert 0 <= result.best_epoch <= 4


def test_same_seed_same_run(pairs: list) -> None:
    first = train(TrainSettings(**TINY), pairs[:18], pairs[18:])
    second = train(TrainSettings(**TINY), pairs[:18], pairs[18:])
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in second.history]


def test_zero_epochs_gives_the_untrained_model(pairs: list) -> None:
    result = train(TrainSettings(**TINY | {"epochs": 0}), pairs[:18], pairs[18:])
    assert result.history == [] and result.best_epoch == 0


def test_size_must_fit_the_depth(pairs: list) -> None:
    with pytest.raises(ConfigError, match="divisible"):
        train(TrainSettings(**TINY | {"image_size": 36, "depth": 3}), pairs[:18], pairs[18:])


def test_empty_split_is_a_clear_error(pairs: list) -> None:
    with pytest.raises(TrainError, match="val"):
        train(TrainSettings(**TINY), pairs, [])


def test_saved_model_predicts_the_same_at_the_photo_size(pairs: list, tmp_path: Path) -> None:
    result = train(TrainSettings(**TINY | {"epochs": 1}), pairs[:18], pairs[18:])
    result.segmenter.save(tmp_path / "model")
    loaded = Segmenter.load(tmp_path / "model")
    photo = Image.new("RGB", (90, 50), (120, 130, 140))
    before, after = result.segmenter.predict_masks([photo])[0], loaded.predict_masks([photo])[0]
    assert after.shape == (50, 90)
    assert np.array_equal(before, after)


def test_augmentation_turns_image_and_mask_together() -> None:
    import torch

    from wms.train.augment import augment

    x = torch.zeros(64, 3, 16, 16)
    x[:, :, 2:4, 5:12] = 1.0  # a bright horizontal bar: the "counter window"
    y = (x[:, :1] > 0.5).float()
    xa, ya = augment(x, y, torch.Generator().manual_seed(0), max_degrees=0, quarter_turns=1.0)
    # Brightness/contrast change the values but not where the bar is: the mask follows the image.
    bright = xa.mean(dim=1, keepdim=True) > xa.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.equal(bright, ya > 0.5)
    upright = (ya.sum(dim=-1) > 0).sum(dim=-1).squeeze(1)  # rows the bar covers: 2 flat, 7 upright
    assert {2, 7} <= set(upright.tolist())


def test_quarter_turns_turn_the_share_asked_for() -> None:
    import torch

    from wms.train.augment import augment

    x = torch.zeros(800, 3, 16, 16)
    x[:, :, 2:4, 5:12] = 1.0  # a horizontal bar near the top: any turn moves it off rows 2-3
    y = (x[:, :1] > 0.5).float()
    _, ya = augment(x, y, torch.Generator().manual_seed(0), quarter_turns=0.25)
    turned = (ya[:, 0, 2:4].sum(dim=(1, 2)) < 14).float().mean()
    assert 0.2 < turned < 0.3
    _, ya = augment(x, y, torch.Generator().manual_seed(0), quarter_turns=0.0)
    assert (ya[:, 0, 2:4].sum(dim=(1, 2)) == 14).all()


def test_quarter_turns_once_a_flag_still_read() -> None:
    assert TrainSettings(augment_quarter_turns=True).augment_quarter_turns == 0.75
    assert TrainSettings(augment_quarter_turns="False").augment_quarter_turns == 0.0  # from the environment
    assert TrainSettings(augment_quarter_turns=0.3).augment_quarter_turns == 0.3


def test_zoom_shows_the_window_smaller_and_larger_with_its_mask() -> None:
    import torch

    from wms.train.augment import augment

    x = torch.zeros(32, 3, 64, 64)
    x[:, :, 24:40, 16:48] = 1.0  # a bright window in the middle, 512 pixels
    y = (x[:, :1] > 0.5).float()
    xa, ya = augment(x, y, torch.Generator().manual_seed(0), max_zoom=0.4)
    area = ya.sum(dim=(1, 2, 3))
    assert area.min() < 400 and area.max() > 640  # zoomed out and in: as from further and nearer
    grey = xa.mean(dim=1, keepdim=True)
    low, high = grey.amin(dim=(1, 2, 3), keepdim=True), grey.amax(dim=(1, 2, 3), keepdim=True)
    bright = (grey > (low + high) / 2).float()
    overlap = (bright * ya).sum(dim=(1, 2, 3)) / torch.maximum(bright, ya).sum(dim=(1, 2, 3))
    assert overlap.min() > 0.9  # the mask moved with the image


def test_early_scale_trains_the_first_half_smaller(pairs: list, monkeypatch: pytest.MonkeyPatch) -> None:
    import wms.train.loop as loop

    seen: list[int] = []
    build = loop.build_model

    def recording(*args: object, **kwargs: object) -> object:
        model = build(*args, **kwargs)  # type: ignore[arg-type]
        model.register_forward_pre_hook(
            lambda m, inputs: seen.append(inputs[0].shape[-1]) if m.training else None
        )
        return model

    monkeypatch.setattr(loop, "build_model", recording)
    result = train(TrainSettings(**TINY | {"epochs": 4, "early_scale": 0.5}), pairs[:18], pairs[18:])
    assert len(result.history) == 4
    assert seen == [16] * 6 + [32] * 6  # 3 steps an epoch: the first 6 of 12 at half the size
    assert result.segmenter.spec.image_size == 32  # the model predicts at image_size


def test_early_size_is_one_the_network_takes() -> None:
    from wms.train.augment import early_size

    def size(image_size: int, scale: float) -> int:
        return early_size(TrainSettings(image_size=image_size, depth=4, early_scale=scale))

    assert size(192, 0.67) == 128  # the cpu recipe
    assert size(64, 0.67) == 32  # the same recipe over --image-size 64: a multiple of 2**depth
    assert size(192, 1.0) == 192  # off
    assert size(32, 0.1) == 16  # never below one the network takes


def test_ema_keeps_the_moving_average_of_the_weights(pairs: list, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    after_step: list[list[torch.Tensor]] = []

    class Recording(torch.optim.AdamW):
        def step(self, closure: object = None) -> object:  # type: ignore[override]
            out = super().step(closure)  # type: ignore[arg-type]
            after_step.append([p.detach().clone() for g in self.param_groups for p in g["params"]])
            return out

    import wms.train.loop as loop

    validations = iter(range(1, 100))  # each validation scores higher: the last epoch is kept
    monkeypatch.setattr(
        loop, "batch_dice", lambda pred, true: torch.full((len(pred),), next(validations) / 100)
    )
    plain = train(TrainSettings(**TINY | {"epochs": 4}), pairs[:18], pairs[18:])
    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    decay = 0.8
    result = train(TrainSettings(**TINY | {"epochs": 4, "ema_decay": decay}), pairs[:18], pairs[18:])
    # The average is only what is kept: training itself runs as without it.
    assert [h["train_loss"] for h in result.history] == [h["train_loss"] for h in plain.history]
    assert result.best_epoch == 4
    expected = after_step[0]
    for weights in after_step[1 : 3 * result.best_epoch]:  # 3 steps an epoch
        expected = [e + (1 - decay) * (w - e) for e, w in zip(expected, weights, strict=True)]
    kept = list(result.segmenter.network.parameters())
    last = after_step[3 * result.best_epoch - 1]
    assert all(torch.allclose(k, e, atol=1e-6) for k, e in zip(kept, expected, strict=True))
    assert not all(torch.allclose(k, w, atol=1e-6) for k, w in zip(kept, last, strict=True))


def test_a_resumed_run_keeps_its_moving_average(
    pairs: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import wms.train.loop as loop

    validations = iter(range(1, 100))  # each validation scores higher: the last epoch is kept
    monkeypatch.setattr(
        loop, "batch_dice", lambda pred, true: torch.full((len(pred),), next(validations) / 100)
    )
    cfg = TrainSettings(**TINY | {"epochs": 4, "ema_decay": 0.8})
    whole = train(cfg, pairs[:18], pairs[18:])

    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, pairs[:18], pairs[18:], interrupted_after(2), checkpoint=checkpoint)
    assert epochs_held(checkpoint) == 2  # what a job started again says it goes on after
    resumed = train(cfg, pairs[:18], pairs[18:], checkpoint=checkpoint)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    assert whole.best_epoch == resumed.best_epoch == 4  # weights averaged across the interruption
    photo = Image.new("RGB", (40, 40), (90, 60, 30))
    probs = [r.segmenter.probability_maps([photo])[0] for r in (whole, resumed)]
    assert np.array_equal(*probs)


def test_a_stop_between_the_checkpoint_and_the_report_waits_for_the_report(
    pairs: list, tmp_path: Path
) -> None:
    """A reclaimed instance's SIGTERM must not leave a checkpoint ahead of the epochs reported."""
    import os
    import signal

    import wms.train.loop as loop
    from wms.guards import Interrupted, signals_raise

    reported: list[int] = []

    class StoppedWhileReporting(loop.SilentReporter):
        def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # the shutdown arrives as the report is written
            reported.append(epoch)

    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(Interrupted), signals_raise():
        train(TrainSettings(**TINY), pairs[:18], pairs[18:], StoppedWhileReporting(), checkpoint=checkpoint)
    assert reported == [1]
    assert epochs_held(checkpoint) == 1  # the job started again goes on from epoch 2, as reported


def test_a_resumed_run_trains_only_what_is_left_of_its_time_budget(
    pairs: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job started again after a reclaim must not get its time budget, or its schedule, anew."""
    from types import SimpleNamespace

    import wms.train.loop as loop

    clock = {"now": 1000.0}  # every training step takes 10 s; nothing else takes time
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))

    class Ticking(loop.SilentReporter):
        def __init__(self, stop_after: int = 0) -> None:
            self.stop_after = stop_after

        def step_done(self, loss: float | None) -> None:
            clock["now"] += 10

        def epoch_done(self, done: int, metrics: dict[str, float]) -> None:
            if done == self.stop_after:
                raise KeyboardInterrupt  # the instance is reclaimed

    cfg = TrainSettings(**TINY | {"epochs": 50, "max_minutes": 2})  # 3 steps an epoch: 4 epochs fit
    whole = train(cfg, pairs[:18], pairs[18:], Ticking())
    assert len(whole.history) == 4

    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, pairs[:18], pairs[18:], Ticking(stop_after=3), checkpoint=checkpoint)
    clock["now"] += 3600  # the instance is started again an hour later
    resumed = train(cfg, pairs[:18], pairs[18:], Ticking(), checkpoint=checkpoint)
    assert len(resumed.history) == 4  # one epoch after the checkpoint's three, not four more
    # The learning rate went on decaying where it was: the same losses as the run never stopped.
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]


def test_a_checkpoint_goes_on_only_under_the_settings_that_wrote_it(pairs: list, tmp_path: Path) -> None:
    """A changed train.* setting between a run and its resume (`wms train --checkpoint`): the saved
    run is not continued as another one, at another size, or into a model of another shape."""
    import torch

    checkpoint = tmp_path / "run.ckpt"
    train(TrainSettings(**TINY | {"epochs": 1}), pairs[:18], pairs[18:], checkpoint=checkpoint)
    with pytest.raises(TrainError, match=r"train.image_size = 32, and now train.image_size = 64"):
        train(TrainSettings(**TINY | {"image_size": 64}), pairs[:18], pairs[18:], checkpoint=checkpoint)
    # More epochs, or another device, go on from it.
    assert len(train(TrainSettings(**TINY), pairs[:18], pairs[18:], checkpoint=checkpoint).history) == 3

    state = torch.load(checkpoint, weights_only=True)
    del state["settings"]  # as a checkpoint written before they were recorded
    torch.save(state, checkpoint)
    with pytest.raises(TrainError, match="holds another model"):
        train(TrainSettings(**TINY | {"base_channels": 8}), pairs[:18], pairs[18:], checkpoint=checkpoint)
