"""A stop keeps the GPU instance for a job that waits for its one runner (single layout).

Against moto's EC2 and a fake GitHub API: the stop is ec2-control.yaml's step, run with that
workflow's environment for the single layout, as a calling run's stop job runs it.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Ec2Box
from tests.test_workflows import for_layout, load
from tests.vcs.test_github import REPO, FakeGitHub, github

from wms.compute.ec2 import Ec2Compute
from wms.config import ComputeSettings

__all__ = ["github"]  # the fake GitHub's fixture

LEASE_SECONDS = 1  # the start lease of the waiting run, in these tests (420 minutes in the workflow)
RUNS = f"GET /repos/{REPO}/actions/runs"
GPU = ["self-hosted", "linux", "wms-gpu"]


def stop_job(
    cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, run: str, layout: str = "single"
) -> Any:
    """ec2-control.yaml's step for `action: stop` in run `run`, with its environment for `layout`."""
    (step,) = [s for s in load("ec2-control.yaml")["jobs"]["ec2"]["steps"] if s.get("id") == "compute"]
    env = for_layout(step["env"], layout)
    assert env["GITHUB_TOKEN"] == "${{ github.token }}"
    monkeypatch.setenv("WMS_COMPUTE__RUNNER_LABEL", env["WMS_COMPUTE__RUNNER_LABEL"])
    words = {"$ACTION": "stop", "$HOLDER": f"gh-run-{run}"}
    return cli(*[words.get(word, word) for word in shlex.split(step["run"])][1:])


def lease(box: Ec2Box, run: str, seconds: float) -> None:
    """Run `run` leases the instance for `seconds` (its start job, or the last renewal of its job)."""
    cfg = ComputeSettings(backend="ec2", instance_id=box.id, lease_minutes=seconds / 60)
    Ec2Compute(cfg, holder=f"gh-run-{run}").renew_lease()


def runs(github: FakeGitHub, jobs: dict[int, list[dict[str, Any]]]) -> None:
    """GitHub lists these runs (queued or in progress) and their jobs."""
    github.answer(
        RUNS, 200, {"total_count": len(jobs), "workflow_runs": [{"id": i, "name": "wf"} for i in jobs]}
    )
    for run_id, listed in jobs.items():
        github.answer(f"{RUNS}/{run_id}/jobs", 200, {"total_count": len(listed), "jobs": listed})


@pytest.fixture
def on_github(
    project_dir: Path, ec2_box: Ec2Box, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> Ec2Box:
    """A running instance, and the variables a stop job has: its token, the repository."""
    for name, value in {
        "WMS_COMPUTE__BACKEND": "ec2",
        "WMS_COMPUTE__INSTANCE_ID": ec2_box.id,
        "WMS_COMPUTE__POLL_SECONDS": "0.02",
        "WMS_GIT__API_URL": github.url,
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_TOKEN": "t0ken",
    }.items():
        monkeypatch.setenv(name, value)
    ec2_box.client.start_instances(InstanceIds=[ec2_box.id])
    return ec2_box


def test_a_stop_keeps_the_instance_for_a_job_queued_for_its_runner_past_its_runs_lease(
    on_github: Ec2Box, github: FakeGitHub, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run 7's train job waited for the runner behind run 8's sweep past run 7's start lease;
    as the sweep ended, run 8's stop job found no live lease but its own and stopped the
    instance under the train job that was taking the runner."""
    box = on_github
    lease(box, "7", LEASE_SECONDS)  # run 7's start job
    lease(box, "8", 3600)  # run 8's sweep job ends: one job lease for its stop job
    time.sleep(LEASE_SECONDS + 0.5)  # run 7's lease ran out while its train job waited
    train = {"name": "Merge, train, gate, promote", "status": "queued", "labels": GPU}
    runs(
        github,
        {7: [{"name": "Start compute / ec2", "status": "completed", "labels": ["ubuntu-latest"]}, train]},
    )

    stopped = stop_job(cli, monkeypatch, "8")

    assert stopped.exit_code == 0, stopped.output
    assert box.state() == "running"
    status = json.loads(stopped.stdout)
    assert status["state"] == "running"
    assert (
        "job 'Merge, train, gate, promote' of run 7 (wf) queued for the runner 'wms-gpu'" in status["detail"]
    )
    assert "leased to gh-run-7 for 60 min" in status["detail"]
    assert status["held_by"] == "gh-run-7"  # one lease, for the job's `wms` to take over or to run out
    assert github.calls(RUNS)[0].headers["Authorization"] == "Bearer t0ken"

    lease(box, "7", 3600)  # the train job's `wms` renewed its run's lease, and ended
    runs(github, {})
    done = stop_job(cli, monkeypatch, "7")
    assert json.loads(done.stdout)["state"] == "stopped"
    assert box.state() == "stopped"


@pytest.mark.parametrize("layout", ["single", "split"])
def test_without_a_job_waiting_for_the_runner_a_stop_stops_as_before(
    layout: str,
    on_github: Ec2Box,
    github: FakeGitHub,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Jobs of other runners, finished jobs and the stopping run's own jobs keep nothing; in
    split the stop asks GitHub nothing."""
    runs(
        github,
        {
            8: [{"name": "Sweep", "status": "in_progress", "labels": GPU}],  # its own run's
            9: [
                {"name": "Stop compute / ec2", "status": "in_progress", "labels": ["ubuntu-latest"]},
                {"name": "Sweep", "status": "completed", "labels": GPU},
                {"name": "Drift", "status": "queued", "labels": ["self-hosted", "linux", "wms-serve"]},
            ],
        },
    )

    stopped = stop_job(cli, monkeypatch, "8", layout)

    assert stopped.exit_code == 0, stopped.output
    assert json.loads(stopped.stdout)["state"] == "stopped"
    assert on_github.state() == "stopped"
    assert bool(github.calls(RUNS)) == (layout == "single")


def test_github_unreachable_stops_as_before_with_one_line(
    on_github: Ec2Box, github: FakeGitHub, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WMS_GIT__API_URL", "http://127.0.0.1:9")  # nothing listens there

    stopped = stop_job(cli, monkeypatch, "8")

    assert stopped.exit_code == 0, stopped.output
    assert json.loads(stopped.stdout)["state"] == "stopped"
    assert on_github.state() == "stopped"
    said = [line for line in stopped.stderr.splitlines() if "could not ask GitHub" in line]
    assert len(said) == 1 and "could not reach http://127.0.0.1:9" in said[0], stopped.stderr
    assert "Traceback" not in stopped.output


def test_a_token_that_may_not_read_actions_stops_as_before_and_says_what_it_needs(
    on_github: Ec2Box, github: FakeGitHub, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    github.answer(RUNS, 403, {"message": "Resource not accessible by integration"})

    stopped = stop_job(cli, monkeypatch, "8")

    assert json.loads(stopped.stdout)["state"] == "stopped"
    assert "Resource not accessible by integration" in stopped.stderr
    assert "needs actions: read" in stopped.stderr
