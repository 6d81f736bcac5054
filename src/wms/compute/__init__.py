"""Compute backends, chosen by `compute.backend`."""

from __future__ import annotations

from wms.compute.base import (
    DEFAULT_HOLDER,
    Compute,
    ComputeStatus,
    Notify,
    RunnerJob,
    RunnerProbe,
    RunnerProbeSource,
    RunnerQueue,
    RunnerQueueSource,
    cost_usd,
    quiet,
    run_holder,
)
from wms.compute.local import LocalCompute
from wms.config import ComputeSettings
from wms.errors import ConfigError

BACKENDS = ("local", "ec2")


def make_compute(
    cfg: ComputeSettings,
    runner_probe: RunnerProbeSource | None = None,
    notify: Notify = quiet,
    holder: str = DEFAULT_HOLDER,
    runner_queue: RunnerQueueSource | None = None,
) -> Compute:
    """The backend named by `compute.backend`; `runner_probe` serves `ready_probe = "runner"`
    (a probe, or a function that builds it when a start first waits for it), `runner_queue`
    a stop's look for jobs that wait for the instance's runner (`compute.runner_label`).

    `holder` names whose lease the verbs act on when they are not told (see compute.base).
    """
    if cfg.backend == "local":
        return LocalCompute()
    if cfg.backend == "ec2":
        from wms.compute.ec2 import Ec2Compute  # boto3 loads only when EC2 is used

        return Ec2Compute(
            cfg, runner_probe=runner_probe, notify=notify, holder=holder, runner_queue=runner_queue
        )
    raise ConfigError(f"unknown compute.backend {cfg.backend!r}; use one of: {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "DEFAULT_HOLDER",
    "Compute",
    "ComputeStatus",
    "LocalCompute",
    "Notify",
    "RunnerJob",
    "RunnerProbe",
    "RunnerProbeSource",
    "RunnerQueue",
    "RunnerQueueSource",
    "cost_usd",
    "make_compute",
    "quiet",
    "run_holder",
]
