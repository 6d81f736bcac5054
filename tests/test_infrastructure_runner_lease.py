"""The runners' post-job script, runner-job-lease.sh: a job that ended before `wms` renewed its
run's lease (a failed checkout or install) leaves that run no lease on the GPU instance, so a
stop job that fails after it no longer leaves the instance the rest of the start's 420 minutes.

The script runs as the runner runs it (`record` from the pre-job script, then the post-job
script) against moto's EC2 through a fake `aws` and a fake `curl` (the instance metadata), while
the start job's and `wms`'s leases are written by the real wms.compute, and the reaper judges.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Ec2Box
from tests.test_infrastructure import ROLES, SCRIPTS, Boot
from tests.test_infrastructure_scripts import _executable, _need
from tests.test_terraform import _statements

from wms.compute.ec2 import Ec2Compute
from wms.config import ComputeSettings

RUN = "gh-run-7"
OTHER = "gh-run-8"  # another run, whose job waits for the same runner
HOOK = "/usr/local/lib/wms/runner-job-lease.sh"

FAKE_AWS = """#!{python}
import json, os, sys
import boto3
args = sys.argv[1:]
with open(os.environ["CALLS"], "a") as calls:
    calls.write(" ".join(args) + "\\n")
def arg(name):
    return args[args.index(name) + 1]
ec2 = boto3.client("ec2")
if args[:2] == ["ec2", "describe-tags"]:
    if os.environ.get("EC2_REFUSES"):
        sys.exit("An error occurred (UnauthorizedOperation)")
    instance = arg("--filters").split("=")[-1]
    found = ec2.describe_tags(Filters=[{{"Name": "resource-id", "Values": [instance]}}])
    print(json.dumps([{{"Key": t["Key"], "Value": t["Value"]}} for t in found["Tags"]]))
elif args[:2] == ["ec2", "delete-tags"]:
    ec2.delete_tags(Resources=[arg("--resources")], Tags=[{{"Key": arg("--tags").removeprefix("Key=")}}])
else:
    sys.exit(f"unexpected: aws {{args}}")
"""


@pytest.fixture
def box(ec2_box: Ec2Box) -> Ec2Box:
    """The instance as the run's start job leaves it: running, its run leased for 420 minutes."""
    ec2_box.client.start_instances(InstanceIds=[ec2_box.id])
    Ec2Compute(_settings(ec2_box, 420), holder=RUN).renew_lease()
    return ec2_box


def _settings(box: Ec2Box, lease_minutes: float) -> ComputeSettings:
    return ComputeSettings(backend="ec2", instance_id=box.id, lease_minutes=lease_minutes, poll_seconds=0.02)


def _hook(tmp_path: Path, box: Ec2Box, *args: str, refuses: bool = False) -> subprocess.CompletedProcess[str]:
    """runner-job-lease.sh on the instance `box`, in the environment of a job of run 7."""
    _need("curl", "jq")
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        _executable(bin_dir / "aws", FAKE_AWS.format(python=sys.executable))
        _executable(
            bin_dir / "curl",
            '#!/bin/sh\ncase "$*" in\n  *api/token*) echo token ;;\n'
            f"  *instance-id*) echo {box.id} ;;\n  *) exit 7 ;;\nesac\n",
        )
    env = os.environ | {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CALLS": str(tmp_path / "calls"),
        "TMPDIR": str(tmp_path),
        "AWS_REGION": "us-east-1",
        "GITHUB_RUN_ID": "7",
    }
    if refuses:
        env["EC2_REFUSES"] = "1"
    script = SCRIPTS / "runner-job-lease.sh"
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=60)


def _reap(box: Ec2Box) -> str:
    reaper = Ec2Compute(ComputeSettings(backend="ec2", poll_seconds=0.02), holder="reaper")
    (reaped,) = [r for r in reaper.reap() if r.instance_id == box.id]
    return reaped.detail


@pytest.mark.parametrize("another_run_waits", [False, True])
def test_a_job_that_failed_before_wms_leaves_its_run_no_lease(
    tmp_path: Path, box: Ec2Box, another_run_waits: bool
) -> None:
    """The run's job failed in its setup, and its stop job failed too: the instance ran on for
    the rest of the start's 420 minutes. Its lease is now gone as the job ends, and the reaper
    stops the instance at its next look, unless another run's lease holds it for that run's job."""
    if another_run_waits:
        Ec2Compute(_settings(box, 420), holder=OTHER).renew_lease()
    assert _hook(tmp_path, box, "record").returncode == 0  # the pre-job script, as the job begins
    ended = _hook(tmp_path, box)  # the post-job script: no `wms` ran in between
    assert ended.returncode == 0, ended.stderr
    assert "dropped it" in ended.stdout
    leases = [k for k in box.tags() if k.startswith("wms:lease:")]
    assert leases == (["wms:lease:" + OTHER] if another_run_waits else [])
    detail = _reap(box)
    assert box.state() == ("running" if another_run_waits else "stopped"), detail


def test_a_job_whose_wms_renewed_the_lease_keeps_it_for_the_jobs_after(tmp_path: Path, box: Ec2Box) -> None:
    """A train job whose `wms pipeline run` ran cut the lease to one compute.lease_minutes and left
    it for its run's deploy job, which may wait for the runner behind another run's job."""
    assert _hook(tmp_path, box, "record").returncode == 0
    renewed = Ec2Compute(_settings(box, 60), holder=RUN).renew_lease(held_only=True)  # keep_job_lease
    ended = _hook(tmp_path, box)
    assert ended.returncode == 0 and "dropped" not in ended.stdout
    assert box.tags()["wms:lease:" + RUN] == renewed
    assert "left running" in _reap(box) and box.state() == "running"


def test_a_job_of_a_run_without_a_lease_or_without_ec2_changes_nothing(tmp_path: Path, box: Ec2Box) -> None:
    """A run that holds no lease (a job run by hand), or an instance whose EC2 cannot be asked (the
    serving node's role may not read tags): the job is never failed, and no lease is touched."""
    Ec2Compute(_settings(box, 60), holder=RUN).release_lease()
    Ec2Compute(_settings(box, 420), holder=OTHER).renew_lease()
    for refuses in (False, True):
        assert _hook(tmp_path, box, "record", refuses=refuses).returncode == 0
        assert _hook(tmp_path, box, refuses=refuses).returncode == 0
    assert "delete-tags" not in (tmp_path / "calls").read_text()
    assert [k for k in box.tags() if k.startswith("wms:lease:")] == ["wms:lease:" + OTHER]


def test_every_runner_runs_the_script_after_each_job_and_may_only_drop_a_runs_lease(
    terraform: dict[str, Any],
) -> None:
    runner = (SCRIPTS / "runner.sh").read_text()
    env_file = runner[runner.index('put_file "$dir/.env"') :].split("\nENV\n")[0]
    assert f"ACTIONS_RUNNER_HOOK_JOB_COMPLETED={HOOK}" in env_file.splitlines()
    assert 'runner-job-lease.sh" record' in (SCRIPTS / "runner-job-started.sh").read_text()
    for template in sorted(set(ROLES.values())):  # every instance with a runner
        assert HOOK in Boot(template).files, template
    (drops,) = [s for s in _statements(terraform, "instance") if s.get("sid") == "DropItsRunsLease"]
    assert drops["actions"] == ["ec2:DeleteTags"]  # a lease can only get shorter
    conditions = {c["variable"]: (c["test"], c["values"]) for c in drops["condition"]}
    assert conditions["aws:TagKeys"] == ("ForAllValues:StringLike", ["wms:lease:gh-run-*"])
    assert conditions["aws:ResourceTag/wms:managed"] == ("StringEquals", ["true"])
