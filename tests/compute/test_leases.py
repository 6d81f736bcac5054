"""The lease tags read as pure functions: whether an instance went down under a holder's lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from wms.compute.leases import HOLDER_TAG_PREFIX, interruption_of

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SPOT = {"Code": "Server.SpotInstanceShutdown", "Message": "Server.SpotInstanceShutdown: Spot"}


def instance(
    state: str, leases: dict[str, timedelta], reason: dict[str, str] | None = None
) -> dict[str, Any]:
    tags = [{"Key": HOLDER_TAG_PREFIX + h, "Value": (NOW + left).isoformat()} for h, left in leases.items()]
    return {"State": {"Name": state}, "Tags": tags, "StateReason": reason or {"Code": "", "Message": ""}}


@pytest.mark.parametrize("state", ["stopping", "stopped", "pending"])
def test_down_under_a_live_lease_is_an_interruption_with_its_reason(state: str) -> None:
    assert interruption_of(instance(state, {"run-1": timedelta(minutes=5)}, SPOT), "run-1", NOW) == (
        "Server.SpotInstanceShutdown"
    )


def test_any_reason_is_reported_and_a_missing_one_says_so() -> None:
    user = {"Code": "Client.UserInitiatedShutdown", "Message": "User initiated shutdown"}
    live = {"run-1": timedelta(minutes=5)}
    assert interruption_of(instance("stopped", live, user), "run-1", NOW) == "Client.UserInitiatedShutdown"
    assert interruption_of(instance("pending", live), "run-1", NOW) == "no reason given"


@pytest.mark.parametrize(
    ("state", "leases"),
    [
        ("running", {"run-1": timedelta(minutes=5)}),  # it runs: nothing went down
        ("stopped", {}),  # WMS's stop dropped this holder's lease first
        ("stopped", {"run-1": timedelta(seconds=-1)}),  # the lease ran out: the reaper's stop
        ("stopped", {"other": timedelta(minutes=5)}),  # someone else's lease, not this run's
        ("terminated", {"run-1": timedelta(minutes=5)}),  # gone for good: nothing to resume on
    ],
)
def test_a_running_instance_or_a_stop_by_wms_is_no_interruption(
    state: str, leases: dict[str, timedelta]
) -> None:
    assert interruption_of(instance(state, leases, SPOT), "run-1", NOW) is None
