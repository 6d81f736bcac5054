"""A reclaimed instance, decided without SSH: resumed or given up, and the start that waits for capacity."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from wms.compute.base import Compute, ComputeStatus
from wms.config import ComputeSettings
from wms.errors import BackendError, CapacityError
from wms.remote.reclaim import (
    Reclaimed,
    Reclaims,
    given_up,
    reclaim_line,
    resuming_from,
    retry_allowed,
    start_again,
)

SPOT = "Server.SpotInstanceShutdown"


class Instance:
    """A compute backend whose instance is down for `reason`, refuses `no_capacity` starts, and
    comes back at `address`."""

    def __init__(self, reason: str | None = SPOT, no_capacity: int = 0, address: str = "203.0.113.9"):
        self.reason, self.no_capacity, self.address = reason, no_capacity, address
        self.starts = 0

    def interruption(self, holder: str | None = None) -> str | None:
        return self.reason

    def start(self, holder: str | None = None) -> ComputeStatus:
        self.starts += 1
        if self.no_capacity:
            self.no_capacity -= 1
            raise CapacityError("EC2 cannot start i-1 now: InsufficientInstanceCapacity: none left")
        self.reason = None
        return self.status()

    def wait_ready(self) -> ComputeStatus:
        return self.status()

    def status(self) -> ComputeStatus:
        state = "running" if self.reason is None else "stopped"
        return ComputeStatus("ec2", state, public_ip=self.address, host=self.address)


def reclaims(instance: Instance, notes: list[str], **settings: float) -> Reclaims:
    return Reclaims(cast(Compute, instance), ComputeSettings(backend="ec2", **settings), notes.append)


def test_retries_are_counted_against_compute_spot_retries() -> None:
    assert [retry_allowed(n, 3) for n in (1, 2, 3, 4)] == [True, True, True, False]
    assert not retry_allowed(1, 0)


def test_what_a_person_reads() -> None:
    assert reclaim_line(SPOT, "job-1", 1, 3) == (
        "the spot instance was reclaimed (Server.SpotInstanceShutdown): starting it again and resuming "
        "job job-1 from its checkpoint; retry 1 of 3"
    )
    assert reclaim_line("Client.UserInitiatedShutdown", "job-1", 2, 3).startswith(
        "the instance was stopped under the job, not by WMS (Client.UserInitiatedShutdown): starting"
    )
    assert resuming_from(2) == "from epoch 3 (its checkpoint holds epochs 1-2)"
    assert resuming_from(1) == "from epoch 2 (its checkpoint holds epoch 1)"
    assert (
        resuming_from(0) == resuming_from(4, checkpoint=False) == "from its first epoch (no checkpoint yet)"
    )
    assert "compute.spot_retries = 2 allows 2 retries, used up" in given_up(SPOT, "job-1", 2)


def test_a_reclaim_is_told_only_when_compute_names_one() -> None:
    with pytest.raises(Reclaimed) as caught:
        reclaims(Instance(SPOT), []).check()
    assert caught.value.reason == SPOT
    reclaims(Instance(None), []).check()  # running, or stopped by WMS: the usual handling goes on


def test_a_reclaim_is_resumed_until_spot_retries_are_used_up() -> None:
    instance, notes = Instance(), []
    watch = reclaims(instance, notes, spot_retries=1)
    assert watch.bring_back(SPOT, "job-1", "198.51.100.4") == "203.0.113.9"  # a new address after the start
    assert notes == [
        reclaim_line(SPOT, "job-1", 1, 1),
        "the instance is at 203.0.113.9 now (it was at 198.51.100.4)",
    ]
    instance.reason = SPOT  # reclaimed again
    with pytest.raises(BackendError) as caught:
        watch.bring_back(SPOT, "job-1", "203.0.113.9")
    assert instance.starts == 1  # past the limit nothing is started
    assert str(caught.value) == given_up(SPOT, "job-1", 1)


def test_with_no_spot_retries_a_reclaim_is_one_clear_error() -> None:
    instance, notes = Instance(), []
    with pytest.raises(BackendError) as caught:
        reclaims(instance, notes, spot_retries=0).bring_back(SPOT, "job-1", "203.0.113.9")
    assert str(caught.value) == (
        "the spot instance was reclaimed (Server.SpotInstanceShutdown) during job job-1, and "
        "compute.spot_retries = 0 allows no retry; the job's folder and checkpoint stay on the "
        "instance (raise compute.spot_retries to retry more)"
    )
    assert (notes, instance.starts) == ([], 0)


class Clock:
    """Time that passes only when slept."""

    def __init__(self) -> None:
        self.now, self.slept = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_start_without_capacity_is_tried_again_with_backoff() -> None:
    instance, notes, clock = Instance(no_capacity=3), [], Clock()
    cfg = ComputeSettings(backend="ec2", start_timeout_seconds=600)
    status = start_again(cast(Compute, instance), cfg, notes.append, clock.sleep, lambda: clock.now)
    assert status.state == "running" and instance.starts == 4
    assert clock.slept == [15, 30, 60]
    assert notes[0].endswith("InsufficientInstanceCapacity: none left; trying again in 15 s")


def test_a_start_without_capacity_gives_up_at_the_start_timeout() -> None:
    instance, clock = Instance(no_capacity=100), Clock()
    cfg = ComputeSettings(backend="ec2", start_timeout_seconds=100)
    with pytest.raises(CapacityError, match=r"for 45 s; the job's checkpoint stays on the instance"):
        start_again(cast(Compute, instance), cfg, lambda _: None, clock.sleep, lambda: clock.now)
    assert clock.slept == [15, 30]  # the next wait (60 s) would pass the limit


def test_wms_train_on_the_instance_says_it_trains_again_not_pipeline_resume(
    project_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_batch: Callable[..., Path]
) -> None:
    """`wms train` has no run to resume: its error says what it can do, and the instance stops."""
    from wms.config import load_settings
    from wms.remote import entry
    from wms.remote.trainer import RemoteTrainer

    key = tmp_path / "wms.pem"
    key.write_text("a key")
    monkeypatch.setenv("WMS_COMPUTE__SSH_KEY", str(key))
    monkeypatch.setenv("WMS_TRACKING__URI", "http://203.0.113.5:5000")
    instance = Instance(reason=None)
    stopped: list[bool] = []
    instance.stop = lambda holder=None: stopped.append(True) or ComputeStatus("ec2", "stopped")  # type: ignore[attr-defined]

    def reclaimed_for_good(self: RemoteTrainer, *args: object) -> None:
        raise BackendError(given_up(SPOT, "job-1", 0))

    monkeypatch.setattr(RemoteTrainer, "train", reclaimed_for_good)
    with pytest.raises(BackendError) as caught:
        entry.train_folder_on_instance(
            load_settings(start=project_dir), cast(Compute, instance), make_batch(count=6), None
        )
    assert str(caught.value) == (
        f"{given_up(SPOT, 'job-1', 0)}; "
        "`wms train` does not go back to a job: run it again to train from the start"
    )
    assert "pipeline resume" not in str(caught.value)
    assert stopped == [True]
