"""DDP on the CPU: `wms train` starts torchrun with two gloo processes, which train as one run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import TINY_SETTINGS

from wms.train.distributed import Dist, from_env, shard, torchrun_command

pytestmark = pytest.mark.slow


def test_shards_cover_an_epoch_like_distributed_sampler() -> None:
    order = np.array([5, 3, 9, 1, 7])
    parts = [shard(order, Dist(rank, 2)) for rank in range(2)]
    assert [p.tolist() for p in parts] == [[5, 9, 7], [3, 1, 5]]  # padded with the head to 6
    assert shard(order, Dist()).tolist() == order.tolist()
    assert from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}) == Dist(1, 2, 1)
    assert from_env({}) == Dist()
    assert torchrun_command(2, ["train", "d"])[-5:] == ["--nproc-per-node=2", "-m", "wms", "train", "d"]


def wms(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WMS_")} | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "wms", *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )


def test_two_gloo_processes_train_one_run_like_one_process(
    tmp_path: Path, make_batch: Callable[..., Path]
) -> None:
    import mlflow

    data = make_batch("data", count=96, seed=5)
    results = {}
    for name, sets in {
        "single": ["train.batch_size=8"],
        "ddp": ["train.batch_size=4", "train.devices=2"],  # the same global batch of 8
    }.items():
        root = tmp_path / name
        root.mkdir()
        (root / "wms.toml").write_text(TINY_SETTINGS)
        # A large val split (40%) keeps the val Dice of these small runs from swinging by chance.
        common = ["train.epochs=24", "train.device='cpu'", "data.val_fraction=0.4", "data.test_fraction=0.1"]
        flags = [f"--set={s}" for s in [*sets, *common]]
        done = wms(root, *flags, "train", str(data), "--checkpoint", str(root / "ckpt" / "run.pt"))
        assert done.returncode == 0, done.stderr[-3000:]
        client = mlflow.MlflowClient(f"sqlite:///{root / '.wms' / 'mlflow.db'}")
        runs = client.search_runs([client.get_experiment_by_name("wms").experiment_id])
        assert len(runs) == 1, f"{name}: {len(runs)} MLflow runs"
        assert [p.name for p in (root / "ckpt").iterdir()] == ["run.pt"]
        artifacts = [a.path for a in client.list_artifacts(runs[0].info.run_id, "model")]
        assert "model/model.pt" in artifacts
        history = client.get_metric_history(runs[0].info.run_id, "val_dice")
        last = [m.value for m in sorted(history, key=lambda m: m.step)][-4:]
        results[name] = (sum(last) / len(last), done.stdout)  # val Dice at the end, over 4 epochs
    assert "training in 2 processes under torchrun (DDP)" in results["ddp"][1]
    assert results["ddp"][1].count("run id:") == 1  # rank 0 alone reports
    assert abs(results["ddp"][0] - results["single"][0]) <= 0.02, results
