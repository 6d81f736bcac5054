"""How a pipeline run holds the training machine: take it, keep its lease alive, give it back.

    hold = ComputeHold(compute, cfg, notify)
    outcome = hold.take(run)          # start_compute: start and wait (or, on the instance, a lease)
    hold.renew()                      # from the run's heartbeat, for compute.max_hold_hours at most
    outcome = hold.give_back(run)     # stop_compute: stop it (or drop this run's lease)
    hold.safety_net(run)              # in `finally`: give it back if stop_compute did not

    with keep_job_lease(compute, cfg, notify):   # a workflow job on the instance: its run's lease
        ...
    with hold_across_batches(compute, cfg, notify):  # a sweep: one start and one stop for its batches
        ...

Two layouts (compute.train_on): "instance" starts the machine and stops it after (training
goes there over SSH); "here" is the workflows' self-hosted runner, where the pipeline runs on
the instance: it never starts or stops it (the workflow's jobs do), it only holds a lease of
its own while it lives, so the reaper leaves a long run alone and takes a dead one's instance
within one lease.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from wms.compute.base import Compute, ComputeStatus, Notify, cost_usd
from wms.config import ComputeSettings
from wms.errors import BackendError
from wms.guards import Heartbeat

if TYPE_CHECKING:
    from wms.runs import PipelineRun


def renew_within_limit(
    compute: Compute, cfg: ComputeSettings, since: float, notify: Notify, held_only: bool = False
) -> None:
    """Renew the lease unless it has been held since `since` (monotonic) for compute.max_hold_hours.

    A run that hangs without dying (a stuck training job, a call that never returns) would
    otherwise renew its lease, and keep the instance running, for as long as its process lives.
    `held_only`: renew only a lease the holder already holds (see Compute.renew_lease).
    """
    held_hours = (time.monotonic() - since) / 3600
    if held_hours < cfg.max_hold_hours:
        compute.renew_lease(held_only=held_only)
    else:
        notify(
            f"held the instance for {held_hours:.1f} h, past compute.max_hold_hours = "
            f"{cfg.max_hold_hours:g}: its lease is no longer renewed, and the reaper stops it "
            "once the lease runs out"
        )


@contextmanager
def keep_job_lease(compute: Compute, cfg: ComputeSettings, notify: Notify) -> Iterator[None]:
    """On the instance (compute.train_on = "here"): hold `compute`'s holder's lease, the one the
    workflow's start job took for this run, at compute.lease_minutes from now while the block
    runs and once more as it ends, for compute.max_hold_hours at most; elsewhere nothing.

    The start job's lease is long (hours): the run's job may wait that long in GitHub's queue for
    the instance's one runner. Once the job runs, its lease is cut to one compute.lease_minutes
    and renewed while it lives, so a job that dies, or a stop job that fails after it, leaves the
    instance at most one lease, not the rest of the start's hours. A holder that holds no lease
    (a person's pipeline on the instance) is given none.
    """
    if not cfg.runs_on_instance:
        yield
        return
    since = time.monotonic()

    def renew() -> None:
        renew_within_limit(compute, cfg, since, notify, held_only=True)

    def renew_once() -> None:
        try:
            renew()
        except Exception as exc:  # the lease runs out by itself; this job's work must go on
            notify(f"could not renew this run's lease ({exc}); it runs out by itself")

    renew_once()
    try:
        with Heartbeat(cfg.lease_minutes * 60 / 3, renew, notify):
            yield
    finally:
        renew_once()  # the jobs after this one (a deploy, the stop job) get a whole lease


@contextmanager
def hold_across_batches(compute: Compute, cfg: ComputeSettings, notify: Notify) -> Iterator[None]:
    """A sweep that trains over SSH (compute.train_on = "instance"): `compute`'s holder leases the
    instance (once any maintenance is over) while the block runs, so each batch's stop_compute
    leaves it running for the next ("kept running: held by ...") and it boots once, not once per
    batch; as the block ends, however it ends, that lease goes and the instance is stopped unless
    another holder still leases it.
    Elsewhere nothing (on the instance, each batch holds its run's lease: keep_job_lease).

    The lease is renewed at compute.lease_minutes while the block runs, for compute.max_hold_hours
    at most, and only while this holder still has it (a stop from outside ends it): a sweep that
    dies leaves the instance to the reaper within one lease, and its workflow's stop job (the run's
    holder, sub-holders included) stops a cancelled one.
    """
    if not cfg.trains_remotely:
        yield
        return
    compute.take_lease()  # after any maintenance: a sweep's lease keeps `status --idle` from passing
    since = time.monotonic()

    def renew() -> None:
        renew_within_limit(compute, cfg, since, notify, held_only=True)

    try:
        with Heartbeat(cfg.lease_minutes * 60 / 3, renew, notify):
            yield
    finally:
        try:
            stopped = compute.stop()
        except Exception as exc:  # the lease runs out by itself; do not mask why the block ended
            notify(f"could not stop compute ({exc}); `wms compute reap` stops it once its lease runs out")
        else:
            notify(f"compute: {_stop_outcome(stopped)}")


def _stop_outcome(stopped: ComputeStatus) -> str:
    """What a stop did: the state it left, or why it left the instance running."""
    return stopped.detail if stopped.state == "running" and stopped.detail else stopped.state


class ComputeHold:
    """One run's hold on the compute backend; `held` while it is taken and not given back."""

    def __init__(
        self,
        compute: Compute,
        cfg: ComputeSettings,
        notify: Notify,
        after_start: Callable[[], None] = lambda: None,
    ) -> None:
        self.compute = compute
        self.cfg = cfg
        self.notify = notify
        self.after_start = after_start  # the pipeline's fault injection point
        # The workflows' self-hosted runner: the pipeline runs on the instance it would start.
        self.on_instance = cfg.runs_on_instance
        self._since: float | None = None  # monotonic time compute was asked to start
        self._renewing = False
        self._lock = threading.Lock()  # no renewal lands after give_back dropped the lease

    @property
    def held(self) -> bool:
        return self._since is not None

    def take(self, run: PipelineRun) -> str:
        """Start the machine and wait until it is ready (on the instance: take a lease); the outcome."""
        compute = self.compute
        self._since = time.monotonic()
        self._renewing = True
        if self.on_instance:
            return self._lease_this_instance(run)
        started = compute.start()
        run.compute.update(
            backend=compute.name,
            instance_id=started.instance_id,
            public_ip=started.public_ip,
            host=started.host,
        )
        run.save()
        self.after_start()  # after the start, as a readiness timeout would fail
        ready = compute.wait_ready()
        where = f" {ready.instance_id}" if ready.instance_id else ""
        return f"{compute.name}{where}: {ready.state}" + (f" at {ready.host}" if ready.host else "")

    def _lease_this_instance(self, run: PipelineRun) -> str:
        compute = self.compute
        current = compute.status()
        run.compute.update(
            backend=compute.name,
            instance_id=current.instance_id,
            public_ip=current.public_ip,
            train_on="here",
        )
        run.save()
        if current.state != "running":
            raise BackendError(
                f'compute.train_on = "here", but instance {current.instance_id} is {current.state}; '
                "run the pipeline on that instance, or set compute.instance_id to the one it runs on"
            )
        compute.renew_lease()
        self.after_start()
        return f"{compute.name} {current.instance_id}: running here; lease renewed while this run lives"

    def renew(self) -> None:
        """Move the lease forward while the machine is held (the run's heartbeat calls this)."""
        with self._lock:
            if self._renewing and self._since is not None:
                renew_within_limit(self.compute, self.cfg, self._since, self.notify)

    def give_back(self, run: PipelineRun) -> str:
        """Stop the machine (on the instance: drop this run's lease); record the time held; the outcome."""
        with self._lock:  # a renewal under way ends first; none starts after this
            self._renewing = False
        if self.on_instance:
            self.compute.release_lease()
            state = "lease released; the instance keeps running for the workflow's stop job"
        else:
            state = _stop_outcome(self.compute.stop())
        held = time.monotonic() - self._since if self._since is not None else 0.0
        self._since = None
        usage = run.compute
        usage["instance_seconds"] = round(usage.get("instance_seconds", 0.0) + held, 1)
        usage["hourly_price_usd"] = self.cfg.hourly_price_usd
        usage["cost_usd"] = cost_usd(usage["instance_seconds"], self.cfg.hourly_price_usd)
        return f"{self.compute.name}: {state} (held {held:.0f} s this time)"

    def safety_net(self, run: PipelineRun) -> None:
        """Give the machine back if the stop_compute stage did not get to it; never raises."""
        if not self.held:
            return
        what = "releasing this run's lease" if self.on_instance else "stopping compute"
        self.notify(f"stop_compute did not finish; {what} again")
        try:
            self.give_back(run)
            run.compute["released_by"] = "safety net"
        except Exception as exc:  # the lease reaper is the last resort; say so, do not mask the cause
            if self.on_instance:
                run.compute["released_by"] = f"nobody: {exc}; this run's lease runs out by itself"
                self.notify(f"could not release the lease ({exc}); it runs out within compute.lease_minutes")
            else:
                run.compute["released_by"] = (
                    f"nobody: {exc}; `wms compute reap` stops it when the lease expires"
                )
                self.notify(f"could not stop compute ({exc}); it is stopped when its lease expires")
