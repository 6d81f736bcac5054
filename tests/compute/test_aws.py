"""EC2's waiters run in slices: the looks follow the settings and the lines stay those of wait_for."""

from __future__ import annotations

import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

from wms.compute.aws import slices, wait
from wms.errors import BackendError

RUNNING = "instance i-1 to be running"


class Looks:
    """An EC2 client on which instance i-1 shows `states`, one per look; the last one stays."""

    def __init__(self, *states: str | Exception) -> None:
        self.states, self.looks = states, 0

    def describe_instances(self, **kwargs: Any) -> dict[str, Any]:
        assert kwargs == {"InstanceIds": ["i-1"]}
        self.looks += 1
        state = self.states[min(self.looks, len(self.states)) - 1]
        if isinstance(state, Exception):
            raise state
        return {"Reservations": [{"Instances": [{"InstanceId": "i-1", "State": {"Name": state}}]}]}


def wait_running(client: Looks, lines: list[str], timeout: float, poll: float, **kw: Any) -> None:
    wait(client, ["instance_running"], RUNNING, timeout, poll, {"InstanceIds": ["i-1"]}, lines.append, **kw)


def test_the_waiter_config_follows_the_settings() -> None:
    # compute.start_timeout_seconds = 600 at compute.poll_seconds = 5: 120 looks, a line every 30 s
    assert slices(600, 5) == [{"Delay": 5, "MaxAttempts": 6}] * 20
    assert slices(0.2, 0.02) == [{"Delay": 0.02, "MaxAttempts": 10}]
    assert slices(100, 60) == [{"Delay": 60, "MaxAttempts": 1}] * 2  # slower looks than lines
    assert slices(70, 20) == [{"Delay": 20, "MaxAttempts": 1}] * 4
    assert slices(2, 5) == [{"Delay": 5, "MaxAttempts": 1}]  # one look at least


def test_a_wait_ends_when_the_state_is_reached() -> None:
    client, lines = Looks("pending", "pending", "running"), []
    wait_running(client, lines, timeout=60, poll=0.01)
    assert client.looks == 3 and lines == [f"waiting for {RUNNING} (up to 60 s)"]


def test_a_long_wait_says_it_still_waits_and_gives_up_with_the_same_line() -> None:
    client, lines = Looks("stopped"), []
    with pytest.raises(BackendError) as caught:
        wait_running(client, lines, timeout=0.1, poll=0.01, hint="look at it", note_every=0.03)
    assert str(caught.value) == f"gave up after 0.1 s waiting for {RUNNING}; look at it"
    assert client.looks == 10  # 0.1 s at 0.01 s, in slices of 3, 3, 3 and 1
    assert lines[0] == f"waiting for {RUNNING} (up to 0.1 s)"
    assert [re.sub(r"\(\d+ s\)", "(N s)", line) for line in lines[1:]] == [
        f"still waiting for {RUNNING} (N s)"
    ] * 3


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("terminated", "instance i-1 is terminated; recreate it with infrastructure/terraform"),
        ("stopping", f"stopped waiting for {RUNNING}: instance i-1 is stopping; something else stopped"),
    ],
)
def test_a_state_the_waiter_cannot_leave_ends_the_wait_at_once(state: str, message: str) -> None:
    client = Looks("pending", state)
    with pytest.raises(BackendError, match=f"^{message}"):
        wait_running(client, [], timeout=600, poll=0.01)
    assert client.looks == 2


def test_an_aws_error_while_waiting_is_one_line() -> None:
    error = {"Error": {"Code": "UnauthorizedOperation", "Message": "not allowed"}}
    client = Looks(ClientError(error, "DescribeInstances"))
    with pytest.raises(BackendError, match=f"^EC2 refused to wait for {RUNNING}: UnauthorizedOperation: not"):
        wait_running(client, [], timeout=600, poll=0.01)
