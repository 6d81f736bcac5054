"""EC2 through boto3: the client, its errors as one line, and its waiters with progress lines.

EC2's waiters (`instance_running`, `instance_stopped`, `instance_status_ok`, ...) look every
`Delay` seconds, at most `MaxAttempts` times. WMS runs one in slices of about 30 s, so a
long wait still says every half minute that it waits, and the slices add up to the limit
the settings give: compute.start_timeout_seconds (or stop_timeout_seconds) at
compute.poll_seconds, e.g. 600 s at 5 s is 120 looks, 20 slices of 6. A waiter is built over
the client it is given, so its looks go through the same object as every other call.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from wms.compute.base import Notify
from wms.errors import BackendError, CapacityError, ConfigError

NOTE_EVERY = 30.0  # seconds between two "still waiting" lines
GONE = ("shutting-down", "terminated")
# Refusals that pass: no capacity of the instance's type in its zone, or a reclaimed spot
# instance whose persistent request is still active (only EC2 restarts it, once capacity returns).
CAPACITY_CODES = ("InsufficientInstanceCapacity", "IncorrectSpotRequestState")


def ec2_client(region: str) -> Any:
    """A boto3 EC2 client for `region` (empty: the usual AWS variables and config)."""
    try:
        import boto3.session
        from botocore.exceptions import NoRegionError
    except ImportError:
        raise ConfigError(
            "compute.backend = \"ec2\" needs boto3; install it with: pip install 'wms[ec2]'"
        ) from None
    try:
        # A session of its own: the default one keeps the credentials it first found.
        return boto3.session.Session(region_name=region or None).client("ec2")
    except NoRegionError:
        raise ConfigError("no AWS region: set compute.region in wms.toml or AWS_DEFAULT_REGION") from None


def _refused(what: str, error: dict[str, Any], default: str) -> BackendError:
    code, message = error.get("Code", "?"), error.get("Message", default)
    if code in CAPACITY_CODES:
        return CapacityError(f"EC2 cannot {what} now: {code}: {message}")
    return BackendError(
        f"EC2 refused to {what}: {code}: {message}; check the AWS credentials and the compute.* settings"
    )


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Turn what boto3 raises while it does `what` into one line: CapacityError or BackendError."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except NoCredentialsError:
        raise BackendError(
            f"no AWS credentials to {what}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        ) from None
    except ClientError as exc:
        raise _refused(what, exc.response.get("Error", {}), str(exc)) from None
    except BotoCoreError as exc:
        raise BackendError(f"cannot reach EC2 to {what}: {exc}") from None


def slices(timeout: float, poll: float, note_every: float = NOTE_EVERY) -> list[dict[str, Any]]:
    """The WaiterConfigs of one wait: timeout / poll looks `poll` s apart, cut every `note_every` s."""
    looks = max(1, math.ceil(timeout / poll - 1e-9))  # 1e-9: 0.2 / 0.02 is 10.000000000000002
    per_slice = max(1, math.floor(note_every / poll + 1e-9))
    return [
        {"Delay": poll, "MaxAttempts": min(per_slice, looks - done)} for done in range(0, looks, per_slice)
    ]


@functools.cache
def _waiter_model() -> Any:
    from botocore.loaders import create_loader
    from botocore.waiter import WaiterModel

    return WaiterModel(create_loader().load_service_model("ec2", "waiters-2"))


def waiter(client: Any, name: str) -> Any:
    """EC2's waiter `name` (as boto3 spells it: "instance_running") looking through `client`.

    Not `client.get_waiter`: that one calls the botocore client underneath, past any object
    that stands in for it or wraps it.
    """
    from botocore import xform_name
    from botocore.waiter import NormalizedOperationMethod, Waiter

    config = _waiter_model().get_waiter("".join(part.title() for part in name.split("_")))
    return Waiter(name, config, NormalizedOperationMethod(getattr(client, xform_name(config.operation))))


def wait(
    client: Any,
    names: Sequence[str],
    what: str,
    timeout: float,
    poll: float,
    params: dict[str, Any],
    notify: Notify,
    hint: str = "",
    note_every: float = NOTE_EVERY,
) -> None:
    """Run EC2's waiters `names` one after the other with `params`, saying what it waits for.

    The same lines as base.wait_for: BackendError after `timeout` seconds, and at once when the
    instance reached a state the waiter cannot leave (terminated while it waits for running).
    """
    pending = [waiter(client, name) for name in names]
    notify(f"waiting for {what} (up to {timeout:g} s)")
    started = time.monotonic()
    with aws_errors(f"wait for {what}"):
        for n, config in enumerate(slices(timeout, poll, note_every)):
            if n:
                time.sleep(poll)  # a waiter does not pause after its last look
                notify(f"still waiting for {what} ({time.monotonic() - started:.0f} s)")
            while pending and _succeeds(pending[0], config, params, what):
                pending.pop(0)
            if not pending:
                return
    raise BackendError(f"gave up after {timeout:g} s waiting for {what}{'; ' + hint if hint else ''}")


def _succeeds(waiter: Any, config: dict[str, Any], params: dict[str, Any], what: str) -> bool:
    """One slice of `waiter`: True on success, False when its looks ran out, else BackendError."""
    from botocore.exceptions import WaiterError

    try:
        waiter.wait(WaiterConfig=config, **params)
    except WaiterError as exc:
        reason = str(exc.kwargs.get("reason", exc))
        if reason.startswith("Max attempts exceeded"):
            return False
        raise _failure(what, reason, exc.last_response or {}) from None
    return True


def _failure(what: str, reason: str, response: dict[str, Any]) -> BackendError:
    """Why a waiter stopped before its time: an AWS error, or a state it cannot leave."""
    if "Error" in response:  # an error no acceptor retries
        return _refused(f"wait for {what}", response["Error"], reason)
    states = [
        (i["InstanceId"], i["State"]["Name"])
        for r in response.get("Reservations", [])
        for i in r["Instances"]
    ]
    for instance_id, state in states:
        if state in GONE:
            return BackendError(
                f"instance {instance_id} is {state}; recreate it with infrastructure/terraform"
            )
    found = ", ".join(f"instance {i} is {s}" for i, s in states)
    return BackendError(
        f"stopped waiting for {what}: {found or reason}; something else stopped or started it "
        "(another run, a spot reclaim, the EC2 console): look at it in the EC2 console and run again"
    )
