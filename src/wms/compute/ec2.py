"""EC2 compute: start and stop one instance with boto3, with leases as a dead-man switch.

    compute.backend = "ec2"   # AWS_* variables (AWS_ENDPOINT_URL included) pick account and endpoint

The instance is `compute.instance_id`, or the one tagged `compute.instance_tag`. Several
workflow runs share it, so each caller is a *holder* with a lease of its own: `start(holder)`
tags it `wms:managed=true` and `wms:lease:<holder>=<ISO time>` *before* starting it (so even
a caller killed while waiting leaves a lease that `wms compute reap` can act on), and keeps
`wms:lease-expires` at the latest expiry for people reading the console. `stop(holder)`
removes that holder's lease and stops the instance only when no other unexpired lease is
left; the reaper stops it once every lease has run out. `release_lease(holder)` drops that
holder's lease and never stops the instance: a pipeline that runs on the instance itself
(`compute.train_on = "here"`) leaves stopping it to the workflow's stop job.

Start and stop race through tags, which EC2 cannot write conditionally. `stop` first tags
`wms:stopping`, then reads the leases again and backs off if another one appeared; `start`
adds its lease first, then looks for `wms:stopping` (or a `stopping` instance) and, if a stop
is under way, waits for it to end and starts the instance again. Whatever order the calls
interleave in, one of the two sees the other's tag. What is left is EC2's eventual
consistency: a tag written a moment ago may not show in the other caller's describe yet
(usually under a second), so a start that lands in that moment can still see its instance
stopped under it; it then fails its wait or its job, and the run is retried (the sweeper).

The instance may be a persistent spot instance that AWS stops when it needs the capacity
back (interruption behaviour "stop"). `interruption(holder)` tells such a stop: the instance
is down while `holder` still holds a live lease, which no WMS stop leaves behind. A start EC2
refuses for want of capacity (or because only EC2 restarts a reclaimed spot instance) raises
`CapacityError`, which a caller may wait out (wms.remote.reclaim).

This module is that bookkeeping and the verbs built on it. The EC2 calls themselves (finding
the instance, writing and removing tags, waiting for a state) are `Ec2Instance`'s
(wms.compute.ec2_instance), and the maintenance tag `Ec2Maintenance`'s (wms.compute.maintenance),
which `Ec2Compute` extends. States and status checks are waited for
through EC2's waiters (wms.compute.aws); the rest (a stop under way, the readiness probes)
polls with base.wait_for.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from wms.compute.aws import GONE
from wms.compute.base import (
    DEFAULT_HOLDER,
    ComputeStatus,
    Notify,
    RunnerJob,
    RunnerProbeSource,
    RunnerQueueSource,
    quiet,
    wait_for,
)
from wms.compute.ec2_status import instance_status, stale_host
from wms.compute.leases import (
    HOLDER_TAG_PREFIX,
    HOLDERS_TAG,
    LEASE_TAG,
    MANAGED_TAG,
    STOPPING_TAG,
    UNNAMED,
    held_by,
    holder_tag,
    interruption_of,
    lease_of,
    leases_of,
    live_holders,
    maintenance_of,
    mark,
    read_mark,
    tags_of,
    utc_now,
)
from wms.compute.maintenance import Ec2Maintenance
from wms.compute.probes import BOOT_HINT, Probe, make_probe
from wms.compute.reaper import reap
from wms.compute.runner_jobs import describe, waiting_jobs
from wms.config import ComputeSettings
from wms.errors import BackendError


class Ec2Compute(Ec2Maintenance):
    """One EC2 instance, found by id or tag; every wait has a limit and says what it waits for."""

    name = "ec2"

    def __init__(
        self,
        cfg: ComputeSettings,
        runner_probe: RunnerProbeSource | None = None,
        notify: Notify = quiet,
        client: Any = None,
        holder: str = DEFAULT_HOLDER,
        runner_queue: RunnerQueueSource | None = None,
    ) -> None:
        super().__init__(cfg, notify, client)
        self.holder = holder  # whose lease start, stop and renew_lease act on when not told
        self._runner_probe = runner_probe
        self._runner_queue = runner_queue  # asked by a stop only (compute.runner_label)
        self._probe: tuple[str, Probe] | None = None
        self._probe_built = False

    def probe(self) -> tuple[str, Probe] | None:
        """The readiness probe, built when a start first needs it: stop, status and the reaper
        never wait for readiness, so they need no GitHub token for `ready_probe = "runner"`."""
        if not self._probe_built:
            self._probe, self._probe_built = make_probe(self.cfg, self._runner_probe), True
        return self._probe

    # -- the leases -------------------------------------------------------------------------
    def renew_lease(self, holder: str | None = None, held_only: bool = False) -> str | None:
        """Move `holder`'s lease to now + compute.lease_minutes (earlier or later than it was);
        returns its new expiry. With `held_only`, a holder with no lease tag gets none (None)."""
        key = holder_tag(holder or self.holder)
        instance = self._describe()
        if held_only and key not in tags_of(instance):
            return None
        expires = utc_now() + timedelta(minutes=self.cfg.lease_minutes)
        me = key[len(HOLDER_TAG_PREFIX) :]  # its old lease is replaced, not kept as the latest
        others = (t for h, t in leases_of(instance).items() if h != me and t is not None)
        latest = max([expires, *others])
        stamp = expires.isoformat(timespec="seconds")
        self._tag(
            f"tag {self._id} with a lease",
            {
                MANAGED_TAG: "true",
                HOLDERS_TAG: "true",
                key: stamp,
                LEASE_TAG: latest.isoformat(timespec="seconds"),
            },
        )
        return stamp

    def take_lease(self, holder: str | None = None) -> None:
        """A new lease for `holder` as a start takes it: once no maintenance holds the instance."""
        self._lease_after_maintenance(holder)

    def _lease_after_maintenance(self, holder: str | None) -> dict[str, Any]:
        """Wait out maintenance, then lease; the instance as read after the lease was written."""
        while True:  # no lease while maintenance lasts, so `wms compute status --idle` stays true
            self.wait_out_maintenance()
            self.renew_lease(holder)
            instance = self._describe()
            if maintenance_of(instance, utc_now()) is None:
                return instance
            self.release_lease(holder)  # maintenance began as the lease was written: step back

    def release_lease(self, holder: str | None = None) -> None:
        """Drop `holder`'s lease and leave the instance as it is (a pipeline running on it is done).

        `wms:lease-expires` follows the leases that are left, and goes with the last of them;
        the reaper stops the instance once no live lease is left.
        """
        key = holder_tag(holder or self.holder)
        me = key[len(HOLDER_TAG_PREFIX) :]
        instance = self._describe()
        others = [t for h, t in leases_of(instance).items() if h not in (me, UNNAMED) and t is not None]
        if others:
            self._tag(
                f"tag {self._id} with its lease", {LEASE_TAG: max(others).isoformat(timespec="seconds")}
            )
        tags = tags_of(instance)
        self._untag(*(k for k in (key, *([] if others else [LEASE_TAG])) if k in tags))

    # -- stopping, step by step (stop and the reaper) ----------------------------------------
    def managed_instances(self) -> list[dict[str, Any]]:
        """Every instance WMS started (tagged wms:managed=true) that is pending or running."""
        response = self._call(
            "list the instances WMS started",
            "describe_instances",
            Filters=[
                {"Name": f"tag:{MANAGED_TAG}", "Values": ["true"]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ],
        )
        return [i for r in response.get("Reservations", []) for i in r.get("Instances", [])]

    def mark_stopping(self, by: str) -> dict[str, Any]:
        """Tag the instance `wms:stopping` for `by`, then read it again: a start that leased it
        before the mark shows in what is returned; one after the mark sees it and waits."""
        self._tag(f"mark {self._target()} as stopping", {STOPPING_TAG: mark(by, utc_now())})
        return self._describe()

    def unmark_stopping(self) -> None:
        """Take the stopping mark off: a stop backed off for a lease that appeared, or has ended."""
        self._untag(STOPPING_TAG)

    def request_stop(self) -> None:
        """Ask EC2 to stop the instance (it is `stopping` on return, not yet `stopped`)."""
        self._call(f"stop {self._id}", "stop_instances", InstanceIds=[self._id])

    def finish_stop(self) -> dict[str, Any]:
        """Wait for `stopped`, drop the mark and the expired leases; the instance as it stopped."""
        self._wait_state("stopped", self.cfg.stop_timeout_seconds)
        stopped = self._describe()
        self._clear_leases(stopped)
        return stopped

    def _clear_leases(self, instance: dict[str, Any]) -> None:
        """After a stop: drop the stopping mark and the expired leases; a lease that is still
        live belongs to a start that is waiting for this stop and starts the instance again."""
        now = utc_now()
        live = live_holders(instance, now)
        leases = leases_of(instance)
        dead = [holder_tag(h) for h in leases if h not in live and h != UNNAMED]
        if not live:
            dead.append(LEASE_TAG)
        self._untag(*(k for k in [*dead, STOPPING_TAG] if k in tags_of(instance)))

    def _stop_under_way(self, instance: dict[str, Any]) -> bool:
        """Whether another caller's stop is deciding or stopping (a mark older than its limit is stale)."""
        if instance["State"]["Name"] == "stopping":
            return True
        stopping = tags_of(instance).get(STOPPING_TAG)
        if stopping is None or instance["State"]["Name"] not in ("pending", "running"):
            return False
        _, written = read_mark(stopping)
        limit = timedelta(seconds=self.cfg.stop_timeout_seconds + 60)
        return written is not None and utc_now() - written < limit

    def _wait_for_stop_to_settle(self) -> str:
        """Wait until a stop under way has backed off (running) or finished (stopped)."""

        def check() -> str | None:
            instance = self._describe()
            state = str(instance["State"]["Name"])
            if state == "stopped" or (state == "running" and not self._stop_under_way(instance)):
                return state
            return None

        return wait_for(
            check,
            f"another caller's stop of {self._target()} to finish or back off",
            self.cfg.stop_timeout_seconds,
            self.cfg.poll_seconds,
            self.notify,
            hint=f"remove the {STOPPING_TAG} tag in the EC2 console if no stop is running",
        )

    # -- the verbs ----------------------------------------------------------------------------
    def start(self, holder: str | None = None) -> ComputeStatus:
        """Take a lease for `holder`, start the instance (a running one is left as it is), wait for checks.

        While the instance is held for maintenance this waits, holding no lease, until that
        ends (wms.compute.maintenance). The lease is written before anything else; then, if
        another holder's stop is under way, this waits for it to back off or finish and starts
        the instance again.
        """
        self.probe()  # a bad probe setting (or no GitHub token for it) fails before anything starts
        state = self._describe()["State"]["Name"]
        if state in GONE:
            raise BackendError(f"instance {self._id} is {state}; recreate it with infrastructure/terraform")
        instance = self._lease_after_maintenance(holder)
        cfg = self.cfg
        state = instance["State"]["Name"]
        if self._stop_under_way(instance):
            who = "another run" if instance["State"]["Name"] != "stopping" else "another run or by AWS"
            self.notify(f"instance {self._id} is being stopped by {who}; it starts again after")
            state = self._wait_for_stop_to_settle()
        if state == "stopped":
            # A stop that ended is no stop under way: a mark its stopper could not take off (the
            # lease guard's poweroff) would hold back the next start for minutes once this runs.
            self.unmark_stopping()
            self.notify(f"starting instance {self._id}")
            self._call(f"start {self._id}", "start_instances", InstanceIds=[self._id])
        if state != "running":
            self._wait_state("running", cfg.start_timeout_seconds)
        self._wait(
            ["instance_status_ok", "system_status_ok"],
            f"the status checks of instance {self._id}",
            cfg.start_timeout_seconds,
            hint="an impaired instance needs a look in the EC2 console (stop it with `wms compute stop`)",
        )
        return self.status()

    def wait_ready(self) -> ComputeStatus:
        """Wait until the configured readiness probe answers (nothing to wait for with `none`)."""
        current = self.status()
        configured = self.probe()
        if configured is None:
            return current
        what, probe = configured
        host = current.host
        if not host:
            raise BackendError(
                f"instance {self._id} has no {self.cfg.address} IP to probe; attach the Elastic IP "
                "(infrastructure/terraform) or set compute.host"
            )
        stale = stale_host(self.cfg, current)
        if stale:
            self.notify(stale)
        wait_for(
            lambda: True if probe(host) else None,
            f"{what} at {host}",
            self.cfg.start_timeout_seconds,
            self.cfg.poll_seconds,
            self.notify,
            hint=stale or BOOT_HINT,
        )
        return current

    def stop(self, holder: str | None = None, sub_leases: bool = False) -> ComputeStatus:
        """Drop `holder`'s lease; stop the instance and wait for `stopped` unless another lease holds it.

        With `sub_leases`, the leases of `holder`'s own sub-holders go too (`gh-run-7-pipeline`
        for `gh-run-7`): a cancelled run's pipeline never released its lease, and the run's stop
        job (`wms compute stop`) ends it.
        An instance another holder still leases is left running and reported as
        "kept running: held by ...". A stopped one is left as it is.
        """
        key = holder_tag(holder or self.holder)
        me = key[len(HOLDER_TAG_PREFIX) :]
        instance = self._describe()
        state = instance["State"]["Name"]
        if state in GONE:
            return self.status_of(instance)

        def own(h: str) -> bool:
            return h == me or (sub_leases and held_by(h, me))

        mine = [HOLDER_TAG_PREFIX + h for h in leases_of(instance) if h != UNNAMED and own(h)]
        others_tagged = [h for h in leases_of(instance) if h != UNNAMED and not own(h)]
        # With no other holder, the summary goes too: it would read as an older WMS's lease.
        self._untag(*dict.fromkeys([key, *mine]), *([] if others_tagged else [LEASE_TAG]))
        if state == "stopped":  # nothing to stop; leases of others are theirs to use or expire
            return self.status_of(self._describe())
        others = [h for h in live_holders(instance, utc_now()) if not own(h)]
        if others and (kept := self._kept(others)) is not None:
            return kept
        if state in ("pending", "running") and (
            jobs := waiting_jobs(self.cfg, self._runner_queue, own, self.notify)
        ):
            return self._kept_for(jobs)
        launched = instance.get("LaunchTime")
        cfg = self.cfg
        if state in ("pending", "running"):
            # Mark the stop, then look again: a start that wrote its lease before the mark is
            # seen here; one that writes it after sees the mark and waits for this stop.
            others = [h for h in live_holders(self.mark_stopping(me), utc_now()) if not own(h)]
            if others and (kept := self._kept(others)) is not None:
                self.unmark_stopping()
                return kept
        if state == "pending":
            self.notify(f"instance {self._id} is still starting; it is stopped once running")
            self._wait_state("running", cfg.start_timeout_seconds)
            state = "running"
        if state == "running":
            self.notify(f"stopping instance {self._id}")
            self.request_stop()
        self.finish_stop()
        billed = None
        if state != "stopped" and launched is not None:
            billed = round((utc_now() - launched).total_seconds(), 1)
        return self.status_of(self._describe(), billed)

    def _kept(self, holders: list[str]) -> ComputeStatus | None:
        """Leave the instance running for `holders`; None when, read again, no holder is left.

        Two holders that stop at the same moment may each see the other's lease and keep the
        instance for it: then no holder tag is left, the summary goes, and the stop goes on
        unless a start leased the instance meanwhile.
        """
        instance = self._describe()
        if not any(key.startswith(HOLDER_TAG_PREFIX) for key in tags_of(instance)):
            self._untag(LEASE_TAG)
            instance = self._describe()
            holders = live_holders(instance, utc_now())
            if not holders:
                return None
        latest = lease_of(instance)
        if latest is not None:  # the summary follows the leases that are left
            self._tag(f"tag {self._id} with its lease", {LEASE_TAG: latest.isoformat(timespec="seconds")})
        self.notify(f"instance {self._id} is still leased by {', '.join(holders)}: left running")
        return self.status_of(instance, detail=f"kept running: held by {', '.join(holders)}")

    def _kept_for(self, jobs: list[RunnerJob]) -> ComputeStatus:
        """Leave the instance running for jobs that wait for its runner, each run leased for one
        compute.lease_minutes: its job's `wms` takes that lease over, or the reaper stops the instance."""
        holders = list(dict.fromkeys(job.holder for job in jobs))
        for holder in holders:
            self.renew_lease(holder)
        minutes = self.cfg.lease_minutes
        why = f"{describe(jobs, self.cfg.runner_label)}: leased to {', '.join(holders)} for {minutes:g} min"
        self.notify(f"instance {self._id}: {why}; left running")
        return self.status_of(self._describe(), detail=f"kept running: {why}")

    def status(self) -> ComputeStatus:
        return self.status_of(self._describe())

    def interruption(self, holder: str | None = None) -> str | None:
        """Why the instance is stopping, stopped or starting again under `holder`'s live lease
        (its StateReason code, e.g. Server.SpotInstanceShutdown); None while it runs or when WMS
        stopped it (see leases.interruption_of)."""
        return interruption_of(self._describe(), holder or self.holder, utc_now())

    def reap(self) -> list[ComputeStatus]:
        """Stop every WMS-started instance whose lease ran out; report those left running too."""
        return reap(self)

    def status_of(
        self, instance: dict[str, Any], billed: float | None = None, detail: str = ""
    ) -> ComputeStatus:
        """What `wms compute status` shows of an instance as EC2 described it."""
        return instance_status(self.name, self.cfg, instance, billed, detail)
