"""Training a second stage (train.refine_epochs): one saved model with two networks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from wms.config import TrainSettings
from wms.data.pairs import find_pairs
from wms.data.synth import synthesize
from wms.errors import ConfigError, TrainError
from wms.train.export import OnnxSegmenter, export_onnx
from wms.train.loop import train
from wms.train.preprocess import open_image
from wms.train.progress import SilentReporter
from wms.train.segmenter import Segmenter
from wms.train.spec import ONNX_FILE, REFINE_WEIGHTS_FILE

SETTINGS = TrainSettings(
    image_size=32,
    base_channels=4,
    depth=2,
    batch_size=8,
    epochs=2,
    device="cpu",
    refine_epochs=2,
    refine_size=32,
    refine_depth=1,
)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> list:
    root = tmp_path_factory.mktemp("second-stage")
    synthesize(root, count=20, size=64, seed=2)
    return find_pairs(root).pairs


class Passes(SilentReporter):
    def __init__(self) -> None:
        self.passes: list[tuple[int, dict[str, float]]] = []

    def refine_pass_done(self, done: int, metrics: dict[str, float]) -> None:
        self.passes.append((done, metrics))


def test_a_second_stage_trains_after_the_first_and_is_saved_with_it(pairs: list, tmp_path: Path) -> None:
    reporter = Passes()
    result = train(SETTINGS, pairs[:16], pairs[16:], reporter)
    assert [done for done, _ in reporter.passes] == [1, 2]  # refine_epochs passes, reported
    assert all(np.isfinite(m["refine_loss"]) for _, m in reporter.passes)
    assert result.refine["refine_passes"] == 2
    segmenter = result.segmenter
    assert segmenter.spec.refine is not None and segmenter.spec.refine.kwargs["depth"] == 1
    segmenter.save(tmp_path / "model")
    export_onnx(segmenter, tmp_path / "model" / ONNX_FILE)
    assert (tmp_path / "model" / REFINE_WEIGHTS_FILE).is_file()
    images = [open_image(p.image) for p in pairs[16:]]
    loaded = Segmenter.load(tmp_path / "model").predict_masks(images)
    served = OnnxSegmenter.load(tmp_path / "model", threads=1).predict_masks(images)
    agreement = np.mean([np.mean(a == b) for a, b in zip(loaded, served, strict=True)])
    assert agreement > 0.999


def test_the_second_stage_learns_the_windows_in_its_crops(pairs: list) -> None:
    reporter = Passes()
    cfg = SETTINGS.model_copy(
        update={"epochs": 1, "refine_epochs": 40, "base_channels": 8, "learning_rate": 0.01}
    )
    train(cfg, pairs[:16], pairs[16:], reporter)
    losses = [m["refine_loss"] for _, m in reporter.passes]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5])  # measured: 1.47 -> 0.91


def test_a_side_the_second_network_cannot_take_is_refused_before_training(pairs: list) -> None:
    cfg = SETTINGS.model_copy(update={"refine_size": 30, "refine_depth": 2})
    with pytest.raises(ConfigError, match=r"train\.refine_size=30 must be divisible by 4"):
        train(cfg, pairs[:16], pairs[16:])


def test_a_second_stage_under_ddp_is_refused_before_training(pairs: list) -> None:
    from wms.train.distributed import Dist

    with pytest.raises(TrainError, match=r"trains in one process: set train\.devices = 1"):
        train(SETTINGS, pairs[:16], pairs[16:], dist=Dist(rank=0, world=2))


def test_the_second_stage_reads_its_loss_a_few_times_per_pass_not_every_step(
    pairs: list, monkeypatch: pytest.MonkeyPatch, host_reads: Callable[[str], Callable[[], int]]
) -> None:
    """Each read of a loss from the device waits for it (a GPU sync): the running loss is read
    READS_PER_PASS times a pass for the progress bar, and once for the pass's mean."""
    from wms.train import second_stage

    reads = host_reads("second_stage.py")
    monkeypatch.setattr(second_stage, "BATCH", 2)  # 16 pairs: 8 steps a pass
    seen: list[float | None] = []

    class Steps(Passes):
        def step_done(self, loss: float | None) -> None:
            seen.append(loss)

    train(SETTINGS.model_copy(update={"epochs": 1}), pairs[:16], pairs[16:], Steps())
    first_network_steps = 2  # 16 pairs in batches of 8, one epoch
    refine_steps = seen[first_network_steps:]
    assert len(refine_steps) == 2 * 8
    assert sum(loss is not None for loss in refine_steps) == 2 * second_stage.READS_PER_PASS
    assert reads() == 2 * (second_stage.READS_PER_PASS + 1), f"{reads()} host reads in 16 steps"


class StoppedAfterPass(Passes):
    """The instance is reclaimed as the second stage reports pass `at` (its checkpoint written)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def refine_pass_done(self, done: int, metrics: dict[str, float]) -> None:
        super().refine_pass_done(done, metrics)
        if done == self.at:
            raise KeyboardInterrupt


def _weights(result: object) -> list:
    refiner = result.segmenter.refiner  # type: ignore[attr-defined]
    return [t.detach().clone() for t in refiner.state_dict().values()]


def test_a_job_stopped_in_the_second_stage_goes_on_from_its_last_pass_to_the_same_network(
    pairs: list, tmp_path: Path
) -> None:
    """A reclaim during the second stage costs one pass, not the whole stage: the job resumed from
    its checkpoint trains only the passes left, and on the CPU ends with the network of a job
    never stopped."""
    import torch

    cfg = SETTINGS.model_copy(update={"epochs": 1, "refine_epochs": 3})
    whole = train(cfg, pairs[:16], pairs[16:], checkpoint=tmp_path / "whole.pt")
    checkpoint = tmp_path / "job.pt"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, pairs[:16], pairs[16:], StoppedAfterPass(2), checkpoint=checkpoint)
    assert (tmp_path / "job-second.pt").is_file()  # beside the first network's
    resumed = Passes()
    result = train(cfg, pairs[:16], pairs[16:], resumed, checkpoint=checkpoint)
    assert [done for done, _ in resumed.passes] == [3]  # only the pass left
    assert result.refine["refine_passes"] == 3
    assert all(torch.equal(a, b) for a, b in zip(_weights(result), _weights(whole), strict=True))


def test_a_second_stage_checkpoint_of_other_refine_settings_is_refused_in_one_line(
    pairs: list, tmp_path: Path
) -> None:
    cfg = SETTINGS.model_copy(update={"epochs": 1, "refine_epochs": 3})
    checkpoint = tmp_path / "job.pt"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, pairs[:16], pairs[16:], StoppedAfterPass(1), checkpoint=checkpoint)
    other = cfg.model_copy(update={"refine_size": 16})  # the first network may go on; this stage may not
    with pytest.raises(TrainError, match=r"job-second\.pt was written with train\.refine_size = 32, and now"):
        train(other, pairs[:16], pairs[16:], checkpoint=checkpoint)
    longer = cfg.model_copy(update={"refine_epochs": 4})  # how long it trains may change
    assert train(longer, pairs[:16], pairs[16:], checkpoint=checkpoint).refine["refine_passes"] == 4
