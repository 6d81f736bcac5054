"""Training on several GPUs with the engine PyTorch users already run: DDP, launched by torchrun.

    wms train DATASET --set train.devices=4      # starts `torchrun --nproc-per-node 4 -m wms train ...`
    torchrun --nproc-per-node 4 -m wms train DATASET --set train.devices=4   # the same, by hand

Each process trains on its shard of every epoch (DistributedSampler's semantics on the
in-memory dataset: one shared permutation, padded to a multiple of the world size, every
process taking each world-th index), gradients are averaged across processes, and only rank 0
logs to MLflow, writes checkpoints and exports. NCCL on CUDA, gloo on the CPU.

`train.batch_size` is per process; the global batch is batch_size x devices, and
`train.learning_rate` applies to that global batch as it is (no automatic scaling).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from wms.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    """Where this process stands in a distributed run (a single process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def from_env(environ: Mapping[str, str]) -> Dist:
    """The process's place as torchrun describes it (RANK, WORLD_SIZE, LOCAL_RANK); SINGLE otherwise."""
    world = int(environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return SINGLE
    return Dist(int(environ.get("RANK", "0")), world, int(environ.get("LOCAL_RANK", "0")))


def devices_wanted(setting: int | str, device: str) -> int:
    """How many processes `train.devices` asks for: a number, or `auto` (every visible GPU, 1 on the CPU)."""
    if setting == "auto":
        return max(1, torch.cuda.device_count()) if device == "cuda" else 1
    count = int(setting)
    if device == "cuda" and count > torch.cuda.device_count():
        raise ConfigError(
            f"train.devices={count}, but {torch.cuda.device_count()} GPU(s) are visible; "
            'set train.devices to at most that, or "auto"'
        )
    return count


def torchrun_command(processes: int, argv: list[str]) -> list[str]:
    """The torchrun command that runs `wms ARGV...` in `processes` processes on this machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "wms",
        *argv,
    ]


@contextmanager
def process_group(dist: Dist, device: str) -> Iterator[str]:
    """Join the run's process group for the block; the device this process trains on."""
    if not dist.active:
        yield device
        return
    import torch.distributed as td

    if device == "cuda":
        torch.cuda.set_device(dist.local_rank)
        device = f"cuda:{dist.local_rank}"
    td.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    try:
        yield device
    finally:
        td.destroy_process_group()


def shard(order: np.ndarray, dist: Dist) -> np.ndarray:
    """This process's part of an epoch's order: padded with its head to a multiple of the world
    (repeated while it is shorter than the padding, as DistributedSampler does), strided, so
    every process takes as many steps."""
    if not dist.active:
        return order
    padded = np.resize(order, -(-len(order) // dist.world) * dist.world)
    return padded[dist.rank :: dist.world]


def shared(value: float, dist: Dist, device: str) -> float:
    """Rank 0's `value` on every process (time-based decisions must agree, or the processes part)."""
    if not dist.active:
        return value
    import torch.distributed as td

    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    td.broadcast(tensor, src=0)
    return float(tensor.item())


def mean_of(value: torch.Tensor, dist: Dist) -> torch.Tensor:
    """The mean of a scalar tensor over the processes."""
    if not dist.active:
        return value
    import torch.distributed as td

    total = value.detach().clone()
    td.all_reduce(total)
    return total / dist.world


def run_under_torchrun(processes: int, argv: list[str]) -> int:
    """Start the same command in `processes` processes with torchrun; its exit status."""
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(torchrun_command(processes, argv), env=env).returncode
