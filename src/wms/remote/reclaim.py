"""A training job whose instance was stopped under it: start the instance again, resume the job.

The GPU instance may be a persistent spot instance with interruption behaviour "stop": AWS
may stop it mid-training (StateReason `Server.SpotInstanceShutdown`) and keeps its disk, so
the job's folder, its code and its checkpoint (saved after every epoch) are still there when
it runs again. The follower (wms.remote.trainer) asks compute at once about a lost connection,
a dead job or a failed exit, instead of waiting out compute.reconnect_seconds:
`Compute.interruption` names the reason when the instance went down under this run's live
lease, which WMS itself never does (any stop from outside counts: a reclaim, maintenance, a
person in the console). Then

    the spot instance was reclaimed (Server.SpotInstanceShutdown): starting it again and
    resuming job J from its checkpoint; retry 1 of 3
    ...
    training job J started again on 203.0.113.9 (pid 4242), from its checkpoint
      203.0.113.9: continuing MLflow run R from epoch 3 (its checkpoint holds epochs 1-2)

the instance is started again (`start_again`: a refusal for want of capacity, or because only
EC2 may restart a reclaimed spot instance, is retried with backoff for
compute.start_timeout_seconds), reached at its address after the start (without an Elastic IP
it changes), and the job is started again in its own folder: it goes on from its checkpoint,
in the same MLflow run. Which epoch it goes on from the job says itself, read from its
checkpoint: the progress file may lag it by an epoch when the stop came between writing the
checkpoint and reporting the epoch done. At most
compute.spot_retries times per train stage; past that the stage fails, and `wms pipeline
resume` goes on from the same checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from wms.compute.base import Compute, ComputeStatus, Notify
from wms.config import ComputeSettings
from wms.errors import BackendError, CapacityError, WmsError

SPOT_CODES = ("Server.SpotInstanceShutdown", "Server.SpotInstanceTermination")
FIRST_WAIT_SECONDS, LONGEST_WAIT_SECONDS = 15.0, 120.0


class Reclaimed(Exception):
    """The instance went down under the job (never shown: the trainer resumes or gives up)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Reclaims:
    """One train stage's watch on its instance: tell a reclaim, bring the instance back, count."""

    def __init__(self, compute: Compute, cfg: ComputeSettings, notify: Notify) -> None:
        self.compute, self.cfg, self.notify = compute, cfg, notify
        self.count = 0

    def check(self) -> None:
        """Raise Reclaimed when the instance went down under this run's lease."""
        try:
            reason = self.compute.interruption()
        except WmsError:  # EC2 is out of reach too: the connection's own retries go on
            return
        if reason is not None:
            raise Reclaimed(reason)

    def bring_back(self, reason: str, job_id: str, host: str) -> str:
        """Say so, start the instance again and wait until it is ready; the address to reach it at.

        BackendError once compute.spot_retries reclaims were resumed in this stage.
        """
        self.count += 1
        limit = self.cfg.spot_retries
        if not retry_allowed(self.count, limit):
            raise BackendError(given_up(reason, job_id, limit))
        self.notify(reclaim_line(reason, job_id, self.count, limit))
        status = start_again(self.compute, self.cfg, self.notify)
        now = status.host
        if not now:
            raise BackendError(
                "the instance runs again but has no address to reach over SSH; attach the Elastic IP "
                "(infrastructure/terraform) or set compute.host"
            )
        if now != host:
            self.notify(f"the instance is at {now} now (it was at {host})")
        return now


def retry_allowed(reclaims: int, limit: int) -> bool:
    """Whether the `reclaims`-th reclaim of one train stage is still resumed (compute.spot_retries)."""
    return reclaims <= limit


def what_happened(reason: str) -> str:
    """`the spot instance was reclaimed (CODE)`, or, for any other stop, what it was."""
    if reason in SPOT_CODES:
        return f"the spot instance was reclaimed ({reason})"
    return f"the instance was stopped under the job, not by WMS ({reason})"


def resuming_from(done: int, checkpoint: bool = True) -> str:
    """Where a job started again goes on, by the epochs its checkpoint holds."""
    if done <= 0 or not checkpoint:
        return "from its first epoch (no checkpoint yet)"
    held = "epoch 1" if done == 1 else f"epochs 1-{done}"
    return f"from epoch {done + 1} (its checkpoint holds {held})"


def reclaim_line(reason: str, job_id: str, reclaims: int, limit: int) -> str:
    """The line a reclaim that is retried shows."""
    return (
        f"{what_happened(reason)}: starting it again and resuming job {job_id} from its checkpoint; "
        f"retry {reclaims} of {limit}"
    )


def given_up(reason: str, job_id: str, limit: int) -> str:
    """The error once compute.spot_retries is used up."""
    tries = "allows no retry" if limit == 0 else f"allows {limit} retr{'y' if limit == 1 else 'ies'}, used up"
    return (
        f"{what_happened(reason)} during job {job_id}, and compute.spot_retries = {limit} {tries}; "
        "the job's folder and checkpoint stay on the instance (raise compute.spot_retries to retry more)"
    )


def start_again(
    compute: Compute,
    cfg: ComputeSettings,
    notify: Notify,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ComputeStatus:
    """Start the instance and wait until it is ready; its status (with its address after the start).

    A start EC2 refuses for now (`CapacityError`: no capacity of its type, or a reclaimed spot
    instance that only EC2 restarts, when capacity returns) is tried again with backoff until
    compute.start_timeout_seconds have passed; `start` also takes an instance EC2 is starting.
    """
    began, wait = clock(), FIRST_WAIT_SECONDS
    while True:
        try:
            compute.start()
            return compute.wait_ready()
        except CapacityError as exc:
            waited = clock() - began
            if waited + wait > cfg.start_timeout_seconds:
                raise CapacityError(
                    f"{exc}, for {waited:.0f} s; the job's checkpoint stays on the instance "
                    "(raise compute.start_timeout_seconds to wait longer)"
                ) from None
            notify(f"{exc}; trying again in {wait:.0f} s")
            sleep(wait)
            wait = min(wait * 2, LONGEST_WAIT_SECONDS)
