"""DDP on the CPU: `wms train` starts torchrun with two gloo processes, which train as one run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import TINY_SETTINGS

from wms.train.distributed import Dist, from_env, shard, torchrun_command

pytestmark = pytest.mark.slow
GLOO_ABORT = "terminate called without an active exception"


def test_shards_cover_an_epoch_like_distributed_sampler() -> None:
    order = np.array([5, 3, 9, 1, 7])
    parts = [shard(order, Dist(rank, 2)) for rank in range(2)]
    assert [p.tolist() for p in parts] == [[5, 9, 7], [3, 1, 5]]  # padded with the head to 6
    assert shard(order, Dist()).tolist() == order.tolist()
    # fewer pairs than processes: each still gets one (a process with none would never join a step)
    assert [shard(np.array([7]), Dist(rank, 3)).tolist() for rank in range(3)] == [[7], [7], [7]]
    assert from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}) == Dist(1, 2, 1)
    assert from_env({}) == Dist()
    assert torchrun_command(2, ["train", "d"])[-5:] == ["--nproc-per-node=2", "-m", "wms", "train", "d"]


def wms(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WMS_")} | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "wms", *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )


def test_two_gloo_processes_train_one_run(tmp_path: Path, make_batch: Callable[..., Path]) -> None:
    """How close such a run comes to one process: benchmarks/ddp_check.py (val Dice within 0.02)."""
    import mlflow

    data = make_batch("data", count=40, seed=5)
    (tmp_path / "wms.toml").write_text(TINY_SETTINGS)
    flags = [
        f"--set={s}"
        for s in ["train.batch_size=4", "train.devices=2", "train.epochs=2", "train.device='cpu'"]
    ]
    args = (*flags, "train", str(data), "--checkpoint", str(tmp_path / "ckpt" / "run.pt"))
    done = wms(tmp_path, *args)
    if done.returncode != 0 and GLOO_ABORT in done.stderr:
        # Seen now and then in a full test run on a loaded 2-core machine, never alone: a gloo
        # process aborts in PyTorch's C++ (std::terminate, no Python error) and torchrun stops
        # the other. The cause is not found; one more run tells it from a failure that repeats.
        shutil.rmtree(tmp_path / ".wms", ignore_errors=True)
        shutil.rmtree(tmp_path / "ckpt", ignore_errors=True)
        done = wms(tmp_path, *args)
    assert done.returncode == 0, done.stderr[-20000:]
    assert "training in 2 processes under torchrun (DDP)" in done.stdout
    assert done.stdout.count("run id:") == 1  # rank 0 alone reports
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / '.wms' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("wms").experiment_id])
    assert len(runs) == 1, f"{len(runs)} MLflow runs"
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["run.pt"]
    assert "model/model.pt" in [a.path for a in client.list_artifacts(runs[0].info.run_id, "model")]
    assert len(client.get_metric_history(runs[0].info.run_id, "val_dice")) == 2  # one value per epoch
