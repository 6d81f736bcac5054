"""The CUDA path's logic, checked on the CPU: precision choice, loss scaling, host reads, checkpoints.

The device capability is faked only at the boundary (`bf16_supported`); the loop runs for real.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import interrupted_after

from wms.config import TrainSettings
from wms.data.pairs import find_pairs
from wms.errors import TrainError
from wms.train import placement
from wms.train.loop import READS_PER_EPOCH, train
from wms.train.precision import choose_precision, cuda_supports_bf16
from wms.train.progress import SilentReporter

TINY = {"image_size": 32, "base_channels": 4, "depth": 2, "batch_size": 2, "epochs": 2}


@pytest.fixture
def pairs(make_batch: Callable[..., Path]) -> list:
    return find_pairs(make_batch(count=24)).pairs


def test_auto_precision_follows_the_device() -> None:
    assert choose_precision("auto", "cuda", bf16_supported=lambda: True) == "bf16"  # A100, H100, L4
    assert choose_precision("auto", "cuda", bf16_supported=lambda: False) == "fp16"  # T4 (g4dn), V100
    assert choose_precision("auto", "cpu", bf16_supported=lambda: True) == "bf16"  # AMX: Sapphire Rapids
    assert choose_precision("auto", "cpu", bf16_supported=lambda: False) == "fp32"
    assert choose_precision("fp16", "cpu") == "fp16"  # an explicit choice is used as given
    with pytest.raises(TrainError, match=r"train\.precision='fp8'"):
        choose_precision("fp8", "cuda")


@pytest.mark.parametrize(("major", "hardware_bf16"), [(7, False), (8, True), (9, True)])
def test_auto_takes_bf16_only_where_the_gpu_computes_in_it(
    major: int, hardware_bf16: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A T4 (compute capability 7.5) emulates bf16, and torch's default answer counts that as
    support; there auto must take fp16. Only the device is faked: torch's own check runs."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)  # emulation works
    assert cuda_supports_bf16() is hardware_bf16
    assert choose_precision("auto", "cuda") == ("bf16" if hardware_bf16 else "fp16")


def test_fp16_trains_through_the_gradient_scaler(pairs: list, monkeypatch: pytest.MonkeyPatch) -> None:
    scaled: list[float] = []
    original = torch.amp.GradScaler.scale

    def spy(self: torch.amp.GradScaler, outputs: torch.Tensor) -> torch.Tensor:
        scaled.append(float(self.get_scale()) if self.is_enabled() else 1.0)
        return original(self, outputs)

    monkeypatch.setattr(torch.amp.GradScaler, "scale", spy)
    result = train(TrainSettings(**TINY | {"precision": "fp16"}), pairs[:18], pairs[18:])
    assert result.precision == "fp16"
    assert scaled and min(scaled) > 1.0  # the loss was scaled up before backward
    losses = [h["train_loss"] for h in result.history]
    assert all(np.isfinite(losses))

    scaled.clear()
    plain = train(TrainSettings(**TINY | {"precision": "bf16"}), pairs[:18], pairs[18:])
    assert plain.precision == "bf16" and set(scaled) == {1.0}  # bf16: the scaler passes through


def test_the_loop_reads_the_loss_a_few_times_per_epoch_not_every_step(
    pairs: list, host_reads: Callable[[str], Callable[[], int]]
) -> None:
    reads = host_reads("loop.py")
    seen: list[float | None] = []

    class Record(SilentReporter):
        def step_done(self, loss: float | None) -> None:
            seen.append(loss)

    cfg = TrainSettings(**TINY | {"epochs": 2})
    train(cfg, pairs[:18], pairs[18:], Record())
    steps = len(seen)
    assert steps == 2 * 9  # 18 training pairs in batches of 2, two epochs
    # Per epoch: READS_PER_EPOCH running-loss reads, the epoch's mean loss, one validation.
    assert 2 * 2 <= reads() <= 2 * (READS_PER_EPOCH + 2) + 1, f"{reads()} host reads in {steps} steps"
    assert sum(loss is not None for loss in seen) == 2 * READS_PER_EPOCH


@contextmanager
def saved_as_if_on_cuda() -> Iterator[None]:
    """torch.save tags every storage "cuda:0", as a checkpoint written on a GPU is tagged."""
    from torch import serialization

    def tag(storage: object) -> str | None:
        return "cuda:0"

    def restore(storage: object, location: str) -> None:
        raise RuntimeError(f"refusing to restore a storage onto {location}: no GPU here")

    entry = (0, tag, restore)
    serialization._package_registry.insert(0, entry)
    try:
        yield
    finally:
        serialization._package_registry.remove(entry)


def test_a_checkpoint_written_on_a_gpu_resumes_to_the_same_model(pairs: list, tmp_path: Path) -> None:
    cfg = TrainSettings(**TINY | {"epochs": 3, "batch_size": 8})
    whole = train(cfg, pairs[:18], pairs[18:])

    checkpoint = tmp_path / "run.ckpt"
    with saved_as_if_on_cuda(), pytest.raises(KeyboardInterrupt):
        train(cfg, pairs[:18], pairs[18:], interrupted_after(2), checkpoint=checkpoint)
    with pytest.raises(RuntimeError, match="deserialize object on a CUDA device"):  # the old map_location
        torch.load(io.BytesIO(checkpoint.read_bytes()), weights_only=True)
    resumed = train(cfg, pairs[:18], pairs[18:], checkpoint=checkpoint)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    photo = Image.new("RGB", (40, 40), (90, 60, 30))
    assert np.array_equal(
        resumed.segmenter.predict_masks([photo])[0], whole.segmenter.predict_masks([photo])[0]
    )


def test_a_set_over_half_the_gpus_free_memory_stays_in_host_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A year of batches outgrows a T4's 15 GB: the set stays on the host, rather than every
    training from then on stopping with an out-of-memory error. Only the free memory is faked."""
    monkeypatch.setattr(placement, "gpu_free_bytes", lambda device: 16 * 2**30)
    pair = 2**20  # one 512 px pair: 3 bytes a pixel for the photo, 1 for the mask
    assert placement.on_device("cuda:0", 830 * pair)
    assert placement.on_device("cuda:0", 8_000 * pair)
    assert not placement.on_device("cuda:0", 9_000 * pair)
    assert not placement.on_device("cpu", 830 * pair)


def test_a_set_in_host_memory_trains_the_same_model_as_one_in_the_devices(
    pairs: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path a set too large for the GPU takes (each batch copied over as uint8) gives the
    model the set in the device's memory gives, bit for bit (both run here on the CPU)."""
    cfg = TrainSettings(**TINY | {"epochs": 2, "batch_size": 4})
    in_host = train(cfg, pairs[:18], pairs[18:])
    monkeypatch.setattr(placement, "on_device", lambda device, nbytes: True)
    in_device = train(cfg, pairs[:18], pairs[18:])
    assert (in_host.dataset_memory, in_device.dataset_memory) == ("host", "gpu")
    assert [h["train_loss"] for h in in_host.history] == [h["train_loss"] for h in in_device.history]
    assert [h["val_dice"] for h in in_host.history] == [h["val_dice"] for h in in_device.history]
    weights, other = in_host.segmenter.network.state_dict(), in_device.segmenter.network.state_dict()
    assert all(torch.equal(weights[k], other[k]) for k in weights)
