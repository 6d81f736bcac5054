"""Whether a stop would cut a job that waits for the instance's one runner (the single layout).

A workflow's start job leases the instance for its run for hours, but a job of that run may
wait in GitHub's queue for the instance's runner longer than that, behind another run's sweep
(up to 700 minutes). When the sweep ends, its run's stop job finds no live lease but its own
and would stop the instance just as the waiting job takes the runner, before that job's `wms`
renewed its run's lease. So a stop about to stop the instance first asks GitHub which jobs of
other runs are queued for, or have just begun on, a runner with `compute.runner_label`; for
those it keeps the instance, leased to their runs for one `compute.lease_minutes` (the reaper
stops it after that if the job never starts). A GitHub that cannot be asked (unreachable, no
token, a token without actions: read) is one line, and the stop goes on as it would without.
"""

from __future__ import annotations

from collections.abc import Callable

from wms.compute.base import Notify, RunnerJob, RunnerQueueSource
from wms.config import ComputeSettings


def waiting_jobs(
    cfg: ComputeSettings, source: RunnerQueueSource | None, own: Callable[[str], bool], notify: Notify
) -> list[RunnerJob]:
    """The jobs of runs that are not `own` (a holder test) queued for or running on the runner
    `compute.runner_label`; none where no label is set, or where GitHub cannot be asked."""
    label = cfg.runner_label
    if not label or source is None:
        return []
    try:
        queue = source() if callable(source) else source
        jobs = [] if queue is None else queue.runner_jobs(label)
    except Exception as exc:  # a stop must never fail, nor keep the instance, for want of an answer
        notify(
            f"could not ask GitHub which jobs wait for the runner {label!r} ({exc}); stopping as if none "
            "did (the stop job's token needs actions: read)"
        )
        return []
    return [job for job in jobs if not own(job.holder)]


def describe(jobs: list[RunnerJob], label: str) -> str:
    """One line naming the jobs, e.g. `job 'Sweep' of run 12 (Pipeline sweeper) is queued for ...`."""
    named = [f"job {j.name!r} of run {j.run_id}" + (f" ({j.workflow})" if j.workflow else "") for j in jobs]
    states = sorted({"queued for" if j.status == "queued" else "running on" for j in jobs})
    return f"{', '.join(named)} {' / '.join(states)} the runner {label!r}"
