"""Compute backends, chosen by `compute.backend`."""

from __future__ import annotations

from wms.compute.base import Compute, ComputeStatus, Notify, RunnerProbe, cost_usd, quiet
from wms.compute.local import LocalCompute
from wms.config import ComputeSettings
from wms.errors import ConfigError

BACKENDS = ("local", "ec2")


def make_compute(
    cfg: ComputeSettings, runner_probe: RunnerProbe | None = None, notify: Notify = quiet
) -> Compute:
    """The backend named by `compute.backend`; `runner_probe` serves `ready_probe = "runner"`."""
    if cfg.backend == "local":
        return LocalCompute()
    if cfg.backend == "ec2":
        from wms.compute.ec2 import Ec2Compute  # boto3 loads only when EC2 is used

        return Ec2Compute(cfg, runner_probe=runner_probe, notify=notify)
    raise ConfigError(f"unknown compute.backend {cfg.backend!r}; use one of: {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "Compute",
    "ComputeStatus",
    "LocalCompute",
    "Notify",
    "RunnerProbe",
    "cost_usd",
    "make_compute",
    "quiet",
]
