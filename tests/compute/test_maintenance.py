"""Maintenance of the EC2 instance (moto's server): a start waits it out, holding no lease, so the
check before a `terraform apply` stays true and no batch is refused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.compute.test_compute import ec2_settings
from tests.conftest import Ec2Box

from wms.compute.ec2 import Ec2Compute
from wms.compute.leases import HOLDER_TAG_PREFIX, MAINTENANCE_TAG


def _maintenance(box: Ec2Box, minutes: float, who: str = "ops@laptop") -> None:
    end = (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat(timespec="seconds")
    box.client.create_tags(Resources=[box.id], Tags=[{"Key": MAINTENANCE_TAG, "Value": f"{who} {end}"}])


def _leases(tags: dict[str, str]) -> list[str]:
    return sorted(k[len(HOLDER_TAG_PREFIX) :] for k in tags if k.startswith(HOLDER_TAG_PREFIX))


def _ended_at(box: Ec2Box, look: int) -> Callable[[int], None]:
    """The operator's `wms compute maintenance --end`, just before the start's look number `look`."""

    def operator(n: int) -> None:
        if n == look:
            box.client.delete_tags(Resources=[box.id], Tags=[{"Key": MAINTENANCE_TAG}])

    return operator


class Watched:
    """The moto client; `on_describe(n)` runs before the n-th describe (the operator meanwhile),
    and the instance's leases are noted at each describe."""

    def __init__(self, box: Ec2Box, on_describe: Callable[[int], None]) -> None:
        self.box, self.on_describe = box, on_describe
        self.looks = 0
        self.leases_seen: list[list[str]] = []
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.box.client, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append(name)
            if name == "describe_instances":
                self.looks += 1
                self.on_describe(self.looks)
                self.leases_seen.append(_leases(self.box.tags()))
            return method(**kwargs)

        return call


def test_a_start_waits_out_maintenance_without_a_lease_and_then_starts(ec2_box: Ec2Box) -> None:
    _maintenance(ec2_box, 30)
    client = Watched(ec2_box, _ended_at(ec2_box, 6))
    lines: list[str] = []
    status = Ec2Compute(ec2_settings(ec2_box), client=client, notify=lines.append, holder="gh-run-9").start()

    assert status.state == "running" and status.held_by == "gh-run-9"
    assert client.leases_seen[:6] == [[]] * 6  # while it waited: no lease, so `--idle` passed
    assert client.calls.index("create_tags") > client.calls.index("describe_instances") + 4
    assert f"instance {ec2_box.id} is held for maintenance by ops@laptop until " in lines[0]
    assert "this start waits for it to end" in lines[0]


def test_maintenance_begun_as_a_start_leases_sends_the_start_back_to_wait(ec2_box: Ec2Box) -> None:
    """Both write their tag and then read the other's: the start that finds maintenance after its
    lease drops the lease (the apply may go on) and starts once maintenance ends."""

    def operator(look: int) -> None:
        if look == 3:  # after the start's first look and its lease (the lease reads once more)
            _maintenance(ec2_box, 30)
        if look == 8:
            ec2_box.client.delete_tags(Resources=[ec2_box.id], Tags=[{"Key": MAINTENANCE_TAG}])

    client = Watched(ec2_box, operator)
    status = Ec2Compute(ec2_settings(ec2_box), client=client, holder="gh-run-9").start()

    assert status.state == "running"
    assert ["gh-run-9"] in client.leases_seen and [] in client.leases_seen[
        client.leases_seen.index(["gh-run-9"]) :
    ]
    assert client.calls.count("delete_tags") >= 2  # its lease, then the operator's end
    assert _leases(ec2_box.tags()) == ["gh-run-9"]


@pytest.mark.parametrize("value", ["ops@laptop 2020-01-01T00:00:00+00:00", "ops@laptop soon", ""])
def test_a_maintenance_that_ended_or_cannot_be_read_holds_no_start_back(ec2_box: Ec2Box, value: str) -> None:
    ec2_box.client.create_tags(Resources=[ec2_box.id], Tags=[{"Key": MAINTENANCE_TAG, "Value": value}])
    status = Ec2Compute(ec2_settings(ec2_box), holder="gh-run-9").start()
    assert status.state == "running" and status.maintenance is None


def test_a_sweep_takes_its_lease_only_once_maintenance_ends(ec2_box: Ec2Box) -> None:
    """A `split` sweep leases the instance for all its batches before the first starts it: taken
    during maintenance, that lease kept `wms compute status --idle` failing the whole time."""
    from wms.compute.hold import hold_across_batches

    _maintenance(ec2_box, 30)
    client = Watched(ec2_box, _ended_at(ec2_box, 5))
    cfg = ec2_settings(ec2_box)
    with hold_across_batches(Ec2Compute(cfg, client=client, holder="gh-run-9-sweep"), cfg, lambda _: None):
        assert _leases(ec2_box.tags()) == ["gh-run-9-sweep"]
    assert client.leases_seen[:5] == [[]] * 5
