"""The compute interface: where training runs, started before and always stopped after.

A backend has a few verbs: `start` (and wait until the machine runs), `wait_ready` (until
the configured probe answers), `stop` (and wait until it is stopped), `status`,
`renew_lease` (a running pipeline keeps its dead-man switch alive), `release_lease` (drop a
lease and leave the machine as it is: a pipeline that runs on the machine itself) and `reap`
(stop every machine whose lease ran out). `start` and `stop` are idempotent. `interruption`
says why the machine went down under a holder's live lease (a spot reclaim, any stop from
outside WMS), so a training job on it can be resumed rather than waited for.

Several runs may share one machine, so `start`, `stop` and the lease verbs act for a *holder*
(a workflow run, a person at a laptop): `stop` releases only that holder's lease and leaves
the machine running while another holder's lease is live. A backend is built with a default
holder (`make_compute(..., holder=...)`) that a verb called without one uses; the CLI names
it, nothing below reads the environment for it. Local compute has nothing to share and
ignores holders.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from wms.errors import BackendError

T = TypeVar("T")

# The holder of a backend built without one (a pipeline started from code, a test).
DEFAULT_HOLDER = "wms"


@dataclass(frozen=True)
class ComputeStatus:
    """What a person needs to know about the training machine."""

    backend: str
    state: str
    detail: str = ""
    instance_id: str | None = None
    public_ip: str | None = None
    private_ip: str | None = None
    # Where WMS reaches it: compute.host, else the address compute.address names.
    host: str | None = None
    mlflow_url: str | None = None
    ssh_command: str | None = None
    lease_expires: str | None = None
    # The holders whose lease is live now (comma-separated): runs that need the machine running.
    held_by: str | None = None
    # While the machine is held for maintenance: until when and by whom (starts wait for it).
    maintenance: str | None = None
    # Seconds the machine has run since it last started (or ran before it was stopped).
    billed_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Compute(Protocol):
    """Start, stop and inspect the machine that trains."""

    name: str
    # The maintenance (who, until) a start is waiting out now, holding no lease; None otherwise.
    waiting_out: tuple[str, datetime] | None

    def start(self, holder: str | None = None) -> ComputeStatus: ...
    def wait_ready(self) -> ComputeStatus: ...
    # `sub_leases`: also drop the leases of the holder's sub-holders (`gh-run-7-pipeline`).
    def stop(self, holder: str | None = None, sub_leases: bool = False) -> ComputeStatus: ...
    def status(self) -> ComputeStatus: ...
    # A new lease as a start takes it: after any maintenance (wms.compute.maintenance) has ended.
    def take_lease(self, holder: str | None = None) -> None: ...
    # `held_only`: renew only a lease the holder holds (expired or not); take none it lacks.
    def renew_lease(self, holder: str | None = None, held_only: bool = False) -> str | None: ...
    def release_lease(self, holder: str | None = None) -> None: ...
    def reap(self) -> list[ComputeStatus]: ...
    def interruption(self, holder: str | None = None) -> str | None: ...


class RunnerProbe(Protocol):
    """Answers whether a GitHub self-hosted runner is online; the git host layer implements it."""

    def is_online(self, name: str) -> bool: ...


# A probe, or what builds one when a start first waits for it (GitHub wants a token, which a
# stop, a status or the reaper should not need).
RunnerProbeSource = RunnerProbe | Callable[[], RunnerProbe | None]


def run_holder(run_id: int | str) -> str:
    """The lease holder of a GitHub Actions workflow run: its start, its jobs and its stop."""
    return f"gh-run-{run_id}"


@dataclass(frozen=True)
class RunnerJob:
    """A workflow job that GitHub has queued for a self-hosted runner, or that has just begun there."""

    run_id: int
    name: str
    status: str  # queued | in_progress
    workflow: str = ""

    @property
    def holder(self) -> str:
        return run_holder(self.run_id)


class RunnerQueue(Protocol):
    """Answers which jobs wait for (or run on) a self-hosted runner label; the git host implements it."""

    def runner_jobs(self, label: str) -> list[RunnerJob]: ...


# The queue, or what builds it when a stop first asks (GitHub wants a token).
RunnerQueueSource = RunnerQueue | Callable[[], RunnerQueue | None]


Notify = Callable[[str], None]


def quiet(_: str) -> None:
    """A `Notify` that shows nothing."""


def cost_usd(seconds: float | None, hourly_price_usd: float) -> float | None:
    """What `seconds` of the machine cost at the configured hourly price (None when unknown)."""
    if seconds is None:
        return None
    return round(seconds / 3600 * hourly_price_usd, 4)


def wait_for(
    check: Callable[[], T | None],
    what: str,
    timeout: float,
    poll: float,
    notify: Notify = quiet,
    hint: str = "",
) -> T:
    """Call `check` until it returns something other than None; BackendError after `timeout` seconds."""
    started = time.monotonic()
    last_note = started
    notify(f"waiting for {what} (up to {timeout:g} s)")
    while True:
        result = check()
        if result is not None:
            return result
        now = time.monotonic()
        if now - started >= timeout:
            raise BackendError(f"gave up after {timeout:g} s waiting for {what}{'; ' + hint if hint else ''}")
        if now - last_note >= 30:
            notify(f"still waiting for {what} ({now - started:.0f} s)")
            last_note = now
        time.sleep(min(poll, max(0.0, timeout - (now - started))))
