"""`wms train` against a tracking server, as an operator sees its output."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

SUPPRESS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


@pytest.fixture
def mlflow_prints_urls(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MLflow's default: it prints a run's URLs when the run ends (the variable unset)."""
    monkeypatch.delenv(SUPPRESS, raising=False)
    yield
    os.environ.pop(SUPPRESS, None)


def test_train_on_a_server_prints_its_own_link_and_none_of_mlflows(
    cli: Callable[..., Any],
    project_dir: Path,
    make_batch: Callable[..., Path],
    tracking: str,
    mlflow_prints_urls: None,
) -> None:
    result = cli("train", make_batch(count=12), "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "View run" not in result.output and "View experiment" not in result.output
    run_id = result.output.split("run id: ")[1].split()[0]
    url = os.environ["WMS_TRACKING__URI"]
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"see it at {url}/#/experiments/") and last.endswith(f"/runs/{run_id}")
    assert "mlflow ui --backend-store-uri http" not in result.output  # no UI runs on a server's URL


def test_a_checkpoint_that_cannot_be_used_is_one_line_before_any_training(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    batch, saved = make_batch(count=12), tmp_path / "train.pt"
    assert cli("train", batch, "--epochs", "1", "--checkpoint", saved).exit_code == 0
    # The same file after [train] changed: torch's state_dict traceback before.
    other = cli("--set", "train.base_channels=4", "train", batch, "--epochs", "2", "--checkpoint", saved)
    assert other.exit_code == 1
    assert other.output.startswith(f"error: checkpoint {saved} was written with train.base_channels")
    assert "go on from it with the settings it was written with" in other.output
    assert "epoch " not in other.output  # stopped before training
    # An empty file: a bare "Aborted." before.
    (tmp_path / "empty.pt").write_bytes(b"")
    empty = cli("train", batch, "--epochs", "1", "--checkpoint", tmp_path / "empty.pt")
    assert empty.exit_code == 1
    assert empty.output.startswith(f"error: checkpoint {tmp_path / 'empty.pt'} cannot be read (EOFError")
    # A folder: it failed only when the first epoch was saved.
    folder = cli("train", batch, "--epochs", "1", "--checkpoint", tmp_path)
    assert folder.exit_code == 2
    assert folder.output.startswith(f"error: --checkpoint {tmp_path} is a folder; name a file")


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        ("13.0", "built for CUDA 13.0: the NVIDIA driver must be loaded and support CUDA 13.0 or newer"),
        (None, "the CPU build of torch: install its CUDA build"),
    ],
    ids=["cuda-wheel", "cpu-wheel"],
)
def test_the_gpu_recipe_where_torch_sees_no_gpu_is_one_line_not_a_run_on_the_cpu(
    cli: Callable[..., Any],
    project_dir: Path,
    make_batch: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    build: str | None,
    reason: str,
) -> None:
    # The GPU instance whose driver torch cannot use (none loaded, or older than the CUDA its
    # wheel was built for), or a CPU build of torch there: torch.cuda.is_available() is False.
    # Before, the gpu recipe then trained on the CPU without a word, into a model the gate
    # turned down.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", build)
    batch = make_batch(count=12)
    result = cli("train", batch, "--recipe", "gpu", "--epochs", "1", "--image-size", "32")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: train.recipe 'gpu' trains on a GPU, but torch "), result.output
    assert reason in result.output and result.output.rstrip().endswith("with train.recipe=cpu")
    assert "epoch " not in result.output  # stopped before training
    # Training on the CPU stays one setting away.
    on_cpu = cli(
        "--set",
        "train.device='cpu'",
        "train",
        batch,
        "--recipe",
        "gpu",
        "--epochs",
        "1",
        "--image-size",
        "32",
    )
    assert on_cpu.exit_code == 0, on_cpu.output


def test_a_size_the_network_cannot_take_is_a_bad_setting_and_starts_no_run(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    from mlflow.tracking import MlflowClient

    batch = make_batch(count=12)
    result = cli("--set", "train.depth=3", "train", batch, "--image-size", "30", "--epochs", "1")
    assert result.exit_code == 2, result.output  # 1 before, as if training had failed
    assert result.output == (
        "error: train.image_size=30 must be divisible by 8 (2**train.depth); use e.g. 24 or 32\n"
    )
    client = MlflowClient(f"sqlite:///{project_dir / '.wms' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs == []  # a FAILED run was left in MLflow before


@pytest.mark.parametrize(
    "failure",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 14.58 GiB total)"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 2147483648 bytes"),
        MemoryError("Unable to allocate 12.0 GiB for an array with shape (12000, 3, 512, 512)"),
    ],
    ids=["cuda-allocator", "torch-cpu-allocator", "numpy"],
)
def test_a_training_that_runs_out_of_memory_is_one_line_that_says_what_to_lower(
    cli: Callable[..., Any],
    project_dir: Path,
    make_batch: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
) -> None:
    """A batch too large for the GPU (or the machine): a many-line traceback before."""
    from wms.train import loop

    def allocation_fails(*args: object, **kwargs: object) -> object:
        raise failure

    monkeypatch.setattr(loop, "augment", allocation_fails)  # the first step's first allocation
    result = cli("--set", "train.batch_size=16", "train", make_batch(count=12), "--epochs", "1")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: this machine ran out of memory training at train.batch_size=16, train.image_size=32: "
        "lower train.batch_size (e.g. 8) or train.image_size, or train on a machine with more memory"
    )


def test_a_command_that_runs_out_of_memory_is_one_line(
    cli: Callable[..., Any],
    project_dir: Path,
    make_batch: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any command, not only training: numpy's MemoryError names what it could not allocate."""
    from wms.cli import data

    def allocation_fails(*args: object, **kwargs: object) -> object:
        raise MemoryError("Unable to allocate 12.0 GiB for an array with shape (12000, 3, 512, 512)")

    monkeypatch.setattr(data, "validate_dataset", allocation_fails)
    result = cli("data", "validate", make_batch(count=4))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == (
        "error: this machine ran out of memory (Unable to allocate 12.0 GiB for an array with shape "
        "(12000, 3, 512, 512)); free some memory, or run it on a machine with more"
    )
