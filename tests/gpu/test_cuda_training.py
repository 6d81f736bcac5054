"""The CUDA path of the training loop, on a real GPU (skipped where there is none).

benchmarks/gpu_check.py runs these first on a lent GPU machine.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tests.conftest import interrupted_after

from wms.config import TrainSettings
from wms.data.pairs import find_pairs
from wms.train.loop import train
from wms.train.precision import cuda_supports_bf16

pytestmark = pytest.mark.gpu

TINY = {"image_size": 64, "base_channels": 8, "depth": 3, "batch_size": 8, "epochs": 3, "device": "cuda"}


@pytest.fixture
def pairs(make_batch: Callable[..., Path]) -> list:
    return find_pairs(make_batch(count=48)).pairs


def test_auto_precision_on_this_gpu_trains(pairs: list) -> None:
    result = train(TrainSettings(**TINY), pairs[:36], pairs[36:])
    assert result.device == "cuda"
    assert result.precision == ("bf16" if cuda_supports_bf16() else "fp16")
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_each_precision_trains_on_cuda(pairs: list, precision: str) -> None:
    if precision == "bf16" and not cuda_supports_bf16():
        pytest.skip("this GPU has no bf16")
    result = train(TrainSettings(**TINY | {"precision": precision}), pairs[:36], pairs[36:])
    assert result.precision == precision
    assert all(torch.isfinite(torch.tensor([h["train_loss"] for h in result.history])))


def test_a_cuda_checkpoint_resumes(pairs: list, tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(TrainSettings(**TINY), pairs[:36], pairs[36:], interrupted_after(2), checkpoint=checkpoint)
    resumed = train(TrainSettings(**TINY), pairs[:36], pairs[36:], checkpoint=checkpoint)
    assert len(resumed.history) == 3  # continued from epoch 3, RNG states restored on the CPU


def test_a_cuda_second_stage_resumes_from_its_last_pass(pairs: list, tmp_path: Path) -> None:
    """Its jitter draws on the GPU's generator: that state is saved with the pass and set again."""
    from wms.train.progress import SilentReporter

    class StoppedAfterFirstPass(SilentReporter):
        def refine_pass_done(self, done: int, metrics: dict[str, float]) -> None:
            if done == 1:
                raise KeyboardInterrupt

    cfg = TrainSettings(**TINY | {"epochs": 1, "refine_epochs": 3, "refine_size": 32, "refine_depth": 1})
    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, pairs[:36], pairs[36:], StoppedAfterFirstPass(), checkpoint=checkpoint)
    state = torch.load(tmp_path / "run-second.ckpt", map_location="cpu", weights_only=True)
    assert len(state["history"]) == 1 and "cuda_rng" in state
    resumed = train(cfg, pairs[:36], pairs[36:], checkpoint=checkpoint)
    assert resumed.refine["refine_passes"] == 3


def test_training_steps_do_not_synchronise_with_the_host(pairs: list) -> None:
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(TrainSettings(**TINY | {"epochs": 2, "batch_size": 2}), pairs[:36], pairs[36:])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    from_loop = [w for w in caught if "synchroniz" in str(w.message) and "loop.py" in w.filename]
    steps = 2 * 18
    assert len(from_loop) < steps / 2, f"{len(from_loop)} synchronising calls in {steps} steps"


def test_a_set_too_large_for_the_gpu_trains_from_host_memory(
    pairs: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same set trains in the GPU's memory and, as if the GPU had no room for it, from the host's."""
    from wms.train import placement

    cfg = TrainSettings(**TINY | {"precision": "fp32"})
    on_gpu = train(cfg, pairs[:36], pairs[36:])
    monkeypatch.setattr(placement, "gpu_free_bytes", lambda device: 0)
    from_host = train(cfg, pairs[:36], pairs[36:])
    assert (on_gpu.dataset_memory, from_host.dataset_memory) == ("gpu", "host")
    for result in (on_gpu, from_host):
        losses = [h["train_loss"] for h in result.history]
        assert losses[-1] < losses[0]
