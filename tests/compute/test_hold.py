"""A run's hold on the instance: its lease is renewed while the run lives, but not for ever.

Against moto's EC2 on loopback, with leases of seconds (compute.lease_minutes = 0.05) and a
hold limit of one second (compute.max_hold_hours = 1 / 3600).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import Ec2Box

from wms.compute.ec2 import Ec2Compute
from wms.compute.hold import ComputeHold, hold_across_batches
from wms.compute.leases import HOLDER_TAG_PREFIX
from wms.config import ComputeSettings
from wms.runs import PipelineRun
from wms.times import parse_time

HOLDER = "gh-run-9-pipeline"


def test_a_run_that_hangs_past_max_hold_hours_stops_renewing_and_its_instance_is_reaped(
    ec2_box: Ec2Box, tmp_path: Path
) -> None:
    ec2_box.client.start_instances(InstanceIds=[ec2_box.id])
    cfg = ComputeSettings(
        backend="ec2",
        train_on="here",
        instance_id=ec2_box.id,
        poll_seconds=0.02,
        lease_minutes=0.05,
        max_hold_hours=1 / 3600,
    )
    notes: list[str] = []
    hold = ComputeHold(Ec2Compute(cfg, holder=HOLDER), cfg, notes.append)
    hold.take(PipelineRun("r1", "batch", tmp_path / "run"))
    taken = ec2_box.tags()[HOLDER_TAG_PREFIX + HOLDER]
    time.sleep(1.1)  # the run hangs; its process, and the heartbeat with it, lives on
    hold.renew()
    assert ec2_box.tags()[HOLDER_TAG_PREFIX + HOLDER] == taken
    assert any("compute.max_hold_hours" in note and "no longer renewed" in note for note in notes)

    expires = parse_time(taken)
    assert expires is not None
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
    reaper = Ec2Compute(ComputeSettings(backend="ec2", poll_seconds=0.02), holder="reaper")
    (reaped,) = [r for r in reaper.reap() if r.instance_id == ec2_box.id]
    assert "lease expired" in reaped.detail
    assert ec2_box.state() == "stopped"


def test_a_sweeps_lease_dropped_by_its_runs_stop_job_is_not_taken_again(ec2_box: Ec2Box) -> None:
    """A cancelled sweep's stop job (`wms compute stop --holder gh-run-9`) drops the sweep's lease
    and stops the instance; a renewal from a sweep process still alive must not lease it again."""
    ec2_box.client.start_instances(InstanceIds=[ec2_box.id])
    cfg = ComputeSettings(backend="ec2", instance_id=ec2_box.id, poll_seconds=0.02, lease_minutes=0.02)
    sweep = HOLDER_TAG_PREFIX + "gh-run-9-sweep"
    with hold_across_batches(Ec2Compute(cfg, holder="gh-run-9-sweep"), cfg, lambda _line: None):
        assert sweep in ec2_box.tags()
        Ec2Compute(cfg, holder="gh-run-9").stop(sub_leases=True)
        assert ec2_box.state() == "stopped"
        time.sleep(0.9)  # past two renewals (every 0.4 s)
        assert sweep not in ec2_box.tags()
    assert ec2_box.state() == "stopped"


def test_a_sweep_on_the_instance_neither_leases_nor_stops_it(ec2_box: Ec2Box) -> None:
    """single (compute.train_on = "here"): each batch holds its run's lease; the workflow stops it."""
    ec2_box.client.start_instances(InstanceIds=[ec2_box.id])
    cfg = ComputeSettings(backend="ec2", train_on="here", instance_id=ec2_box.id, poll_seconds=0.02)
    with hold_across_batches(Ec2Compute(cfg, holder="gh-run-9-sweep"), cfg, lambda _line: None):
        pass
    assert ec2_box.state() == "running"
    assert not [key for key in ec2_box.tags() if key.startswith(HOLDER_TAG_PREFIX)]
