"""`wms compute` as CI and a person meet it: values on stdout, in $GITHUB_OUTPUT and the step summary."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Ec2Box

from wms.compute.leases import HOLDER_TAG_PREFIX, MAINTENANCE_TAG


@pytest.fixture
def ec2_project(project_dir: Path, ec2_box: Ec2Box, monkeypatch: pytest.MonkeyPatch) -> Ec2Box:
    for key, value in {
        "BACKEND": "ec2",
        "INSTANCE_TAG": ec2_box.tag,
        "POLL_SECONDS": "0.02",
        "HOURLY_PRICE_USD": "3600",  # a dollar a second: the cost equals the billed seconds
    }.items():
        monkeypatch.setenv(f"WMS_COMPUTE__{key}", value)
    return ec2_box


def outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_start_status_stop_round_trip_for_ci(
    cli: Callable[..., Any], ec2_project: Ec2Box, github_files: tuple[Path, Path]
) -> None:
    output, summary = github_files
    started = cli("compute", "start", "--json")
    assert started.exit_code == 0, started.output
    values = json.loads(started.stdout)
    ip = values["public_ip"]
    assert values["state"] == "running" and values["instance_id"] == ec2_project.id and ip
    assert ec2_project.state() == "running"
    written = outputs(output)
    assert written["public_ip"] == ip
    assert written["mlflow_url"] == f"http://{ip}:5000"
    assert written["ssh_command"] == f"ssh -i ~/.ssh/wms.pem ubuntu@{ip}"
    page = summary.read_text()
    assert f"| MLflow | http://{ip}:5000 |" in page and f"`ssh -i ~/.ssh/wms.pem ubuntu@{ip}`" in page

    status = cli("compute", "status")
    assert status.exit_code == 0
    assert "running" in status.stdout and f"http://{ip}:5000" in status.stdout

    stopped = cli("compute", "stop", "--json")
    assert stopped.exit_code == 0
    values = json.loads(stopped.stdout)
    assert values["state"] == "stopped" and ec2_project.state() == "stopped"
    assert values["cost_usd"] == pytest.approx(values["billed_seconds"], abs=0.01)
    assert outputs(output)["state"] == "stopped"


def test_a_missing_instance_is_one_line_and_exit_1(
    cli: Callable[..., Any], project_dir: Path, aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WMS_COMPUTE__BACKEND", "ec2")
    monkeypatch.setenv("WMS_COMPUTE__INSTANCE_TAG", "Name=no-such-machine")
    result = cli("compute", "status")
    assert result.exit_code == 1
    assert "no EC2 instance tagged Name=no-such-machine" in result.stderr
    assert "Traceback" not in result.output


def test_local_backend_needs_no_cloud(cli: Callable[..., Any], project_dir: Path) -> None:
    result = cli("compute", "status", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["backend"] == "local"


@pytest.mark.parametrize("args", [["ssh"], ["ssh", "--print"], ["exec", "--", "nvidia-smi"]])
def test_ssh_and_exec_on_the_local_backend_say_it_is_this_machine(
    cli: Callable[..., Any], project_dir: Path, args: list[str]
) -> None:
    result = cli("compute", *args)
    assert result.exit_code == 2
    # ssh said "the instance is running and has no address; start it with `wms compute start`",
    # which does nothing for the local backend.
    assert result.output.startswith(
        f"error: `wms compute {args[0]}` runs" if args[0] == "exec" else "error: `wms compute ssh` opens"
    )
    assert 'set compute.backend = "ec2"' in result.output and "wms compute start" not in result.output


def test_reap_stops_an_expired_lease(
    cli: Callable[..., Any], ec2_project: Ec2Box, github_files: tuple[Path, Path]
) -> None:
    assert cli("--set", "compute.lease_minutes=1", "compute", "start", "--holder", "me").exit_code == 0
    kept = cli("compute", "reap")
    assert f"kept {ec2_project.id}" in kept.stdout
    ec2_project.client.create_tags(
        Resources=[ec2_project.id], Tags=[{"Key": "wms:lease:me", "Value": "2000-01-01T00:00:00+00:00"}]
    )
    reaped = cli("compute", "reap")
    assert reaped.exit_code == 0
    assert f"stopped {ec2_project.id}: lease expired at 2000-01-01" in reaped.stdout
    assert ec2_project.state() == "stopped"
    assert outputs(github_files[0])["stopped"] == ec2_project.id


def test_two_runs_share_the_instance_and_the_last_one_out_stops_it(
    cli: Callable[..., Any],
    ec2_project: Ec2Box,
    github_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GITHUB_RUN_ID", "101")  # the holder defaults to the workflow run
    assert cli("compute", "start").exit_code == 0
    assert cli("compute", "start", "--holder", "gh-run-202").exit_code == 0
    assert {k for k in ec2_project.tags() if k.startswith("wms:lease:")} == {
        "wms:lease:gh-run-101",
        "wms:lease:gh-run-202",
    }

    first = cli("compute", "stop")
    assert first.exit_code == 0, first.output
    assert "kept running: held by gh-run-202" in first.stdout
    assert ec2_project.state() == "running"
    assert "### compute kept running (ec2)" in github_files[1].read_text()

    monkeypatch.setenv("GITHUB_RUN_ID", "202")
    last = cli("compute", "stop", "--json")
    assert last.exit_code == 0 and json.loads(last.stdout)["state"] == "stopped"
    assert ec2_project.state() == "stopped"


def test_exec_stop_gives_the_machine_back_when_it_never_gets_ready(
    cli: Callable[..., Any], ec2_project: Ec2Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    for key, value in {
        "READY_PROBE": "tcp",
        "HOST": "127.0.0.1",
        "SSH_PORT": str(closed),
        "START_TIMEOUT_SECONDS": "0.3",
    }.items():
        monkeypatch.setenv(f"WMS_COMPUTE__{key}", value)
    result = cli("compute", "exec", "--stop", "--holder", "me", "--", "nvidia-smi")
    assert result.exit_code == 1
    assert f"waiting for TCP port {closed} (SSH) at 127.0.0.1" in result.stderr
    assert "Traceback" not in result.output
    assert ec2_project.state() == "stopped"  # not left running for the lease's hour
    assert not [k for k in ec2_project.tags() if k.startswith("wms:lease:") or k == "wms:lease-expires"]


def test_stop_status_and_reap_need_no_github_token_with_the_runner_probe(
    cli: Callable[..., Any], ec2_project: Ec2Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WMS_COMPUTE__READY_PROBE", "runner")
    for name in ("WMS_GITHUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    refused = cli("compute", "start", "--holder", "gh-run-5")
    assert refused.exit_code == 2 and "no GitHub token" in refused.stderr
    assert "Traceback" not in refused.output
    assert ec2_project.state() == "stopped"  # refused before anything started

    ec2_project.client.start_instances(InstanceIds=[ec2_project.id])  # started by a run with a token
    ec2_project.client.create_tags(
        Resources=[ec2_project.id],
        Tags=[
            {"Key": "wms:managed", "Value": "true"},
            {"Key": "wms:lease:gh-run-5", "Value": "2000-01-01T00:00:00+00:00"},
        ],
    )
    assert cli("compute", "status").exit_code == 0
    reaped = cli("compute", "reap")
    assert reaped.exit_code == 0, reaped.output
    assert ec2_project.state() == "stopped"  # the dead-man switch still works
    ec2_project.client.start_instances(InstanceIds=[ec2_project.id])
    stopped = cli("compute", "stop", "--holder", "gh-run-5")
    assert stopped.exit_code == 0, stopped.output
    assert ec2_project.state() == "stopped"


def test_a_cancelled_runs_stop_job_stops_the_instance_its_pipeline_held(
    cli: Callable[..., Any], ec2_project: Ec2Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_RUN_ID", "7")
    assert cli("compute", "start").exit_code == 0  # the start job
    assert (
        cli("compute", "renew", "--holder", "gh-run-7-pipeline").exit_code == 0
    )  # the pipeline, then killed
    stopped = cli("compute", "stop", "--holder", "gh-run-7", "--json")  # the stop job
    assert stopped.exit_code == 0, stopped.output
    assert json.loads(stopped.stdout)["state"] == "stopped" and ec2_project.state() == "stopped"


def test_a_bare_stop_leaves_your_own_running_pipeline_its_machine(
    cli: Callable[..., Any], ec2_project: Ec2Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wms.cli.compute import default_holder

    monkeypatch.delenv("GITHUB_RUN_ID", raising=False)
    assert cli("compute", "start").exit_code == 0
    assert cli("compute", "renew", "--holder", f"{default_holder()}-pipeline").exit_code == 0
    kept = cli("compute", "stop")  # at a laptop, while a pipeline of yours trains
    assert kept.exit_code == 0, kept.output
    assert "kept running" in kept.output and ec2_project.state() == "running"


def test_ctrl_c_while_starting_says_the_instance_is_leased_and_how_to_stop_it(
    cli: Callable[..., Any], ec2_project: Ec2Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wms.compute.ec2 import Ec2Compute

    def ctrl_c(self: Ec2Compute) -> None:
        raise KeyboardInterrupt  # while waiting for the status checks

    monkeypatch.setattr(Ec2Compute, "wait_ready", ctrl_c)
    result = cli("compute", "start", "--holder", "ana")
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines()[-1] == (
        "interrupted (SIGINT): stopped waiting; the instance may go on starting, leased to ana for 60 min: "
        "stop it with `wms compute stop --holder ana` (else `wms compute reap` stops it when the lease ends)"
    )
    assert cli("compute", "stop", "--holder", "ana").exit_code == 0
    assert ec2_project.state() == "stopped"


def test_ctrl_c_while_a_start_waits_out_maintenance_says_it_took_no_lease(
    cli: Callable[..., Any], ec2_project: Ec2Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wms.compute.maintenance

    def ctrl_c(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # while waiting for the maintenance to end

    assert cli("compute", "maintenance", "--minutes", "30").exit_code == 0
    by, _, end = ec2_project.tags()[MAINTENANCE_TAG].rpartition(" ")
    monkeypatch.setattr(wms.compute.maintenance, "wait_for", ctrl_c)
    result = cli("compute", "start", "--holder", "ana")
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines()[-1] == (
        f"interrupted (SIGINT): stopped waiting for the maintenance by {by} to end ({end[11:16]} UTC); "
        "this start took no lease and left the instance as it was"
    )
    assert not [k for k in ec2_project.tags() if k.startswith(HOLDER_TAG_PREFIX)]
    assert ec2_project.state() == "stopped"


def test_in_the_split_layout_the_summary_does_not_send_people_to_mlflow_on_the_gpu(
    cli: Callable[..., Any],
    ec2_project: Ec2Box,
    github_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Manual EC2 Control in `split`: MLflow lives on the serving node, the GPU instance has none."""
    monkeypatch.setenv("WMS_COMPUTE__MLFLOW_ON_INSTANCE", "false")  # as the workflows set it in split
    output, summary = github_files
    started = cli("compute", "start")
    assert started.exit_code == 0, started.output
    ip = outputs(output)["public_ip"]
    assert ip and f"{ip}:5000" not in summary.read_text() and f"{ip}:5000" not in started.stdout
    assert "| MLflow | on the serving node, not this instance: `terraform output mlflow_url` |" in (
        summary.read_text()
    )
    assert outputs(output)["mlflow_url"] == ""  # nothing for a later job to log to on the GPU
    assert f"ubuntu@{ip}" in summary.read_text()  # the address and SSH command stay


@pytest.mark.parametrize("on_instance", [True, False])
def test_ssh_forwards_mlflow_only_where_it_runs_on_the_instance(
    cli: Callable[..., Any], ec2_project: Ec2Box, monkeypatch: pytest.MonkeyPatch, on_instance: bool
) -> None:
    """In split MLflow is on the serving node: `ssh --mlflow` printed a forward of the GPU
    instance's port 5000, where nothing listens, and the browser at 127.0.0.1:5000 got nothing."""
    assert cli("compute", "start", "--holder", "me").exit_code == 0
    monkeypatch.setenv("WMS_COMPUTE__MLFLOW_ON_INSTANCE", str(on_instance).lower())
    result = cli("compute", "ssh", "--print", "--mlflow")
    if on_instance:
        assert result.exit_code == 0 and "-L 5000:127.0.0.1:5000" in result.stdout
    else:
        assert result.exit_code == 2 and "-L" not in result.output
        assert result.output.startswith("error: --mlflow forwards the GPU instance's MLflow")
        assert "terraform output mlflow_url" in result.output and len(result.output.splitlines()) == 1


def test_split_finds_a_replaced_gpu_instance_at_its_new_private_address(
    cli: Callable[..., Any], ec2_project: Ec2Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The split layout's pipeline reaches the GPU instance over the VPC. A replaced instance
    (`terraform apply -replace=aws_instance.gpu`) has another private address: every training
    job failed until someone set WMS_GPU_HOST again. It is read from EC2 at each start now."""
    monkeypatch.setenv("WMS_COMPUTE__ADDRESS", "private")  # the workflows' setting in split
    monkeypatch.setenv("WMS_COMPUTE__HOST", "")  # vars.WMS_GPU_HOST unset
    first = json.loads(cli("compute", "start", "--json").stdout)
    assert first["host"] == ec2_project.describe()["PrivateIpAddress"] != first["public_ip"]
    assert cli("compute", "stop").exit_code == 0
    ec2_project.client.terminate_instances(InstanceIds=[ec2_project.id])
    new = Ec2Box(ec2_project.client, ec2_project.name)  # the replacement, under the same Name tag
    try:
        started = cli("compute", "start", "--json")
        assert started.exit_code == 0, started.output
        again = json.loads(started.stdout)
        address = new.describe()["PrivateIpAddress"]
        assert (again["instance_id"], again["host"]) == (new.id, address) and address != first["host"]
        assert again["ssh_command"] == f"ssh -i ~/.ssh/wms.pem ubuntu@{address}"
        # An address set by hand still wins (WMS_GPU_HOST, for a network of one's own); one left
        # from the replaced instance is named at once, not only after the wait for it ran out.
        monkeypatch.setenv("WMS_COMPUTE__HOST", first["host"])
        assert json.loads(cli("compute", "status", "--json").stdout)["host"] == first["host"]
        monkeypatch.setenv("WMS_COMPUTE__READY_PROBE", "tcp")
        monkeypatch.setenv("WMS_COMPUTE__START_TIMEOUT_SECONDS", "0.2")
        stale = cli("compute", "start")  # the wait's outcome is the network's: only the line is asserted
        assert "Traceback" not in stale.output
        assert (
            f"compute.host {first['host']} is no address of instance {new.id} (private {address}): "
            "left from a replaced instance? Unset it (the repository variable WMS_GPU_HOST)"
        ) in stale.stderr
    finally:
        new.client.terminate_instances(InstanceIds=[new.id])


def test_status_idle_refuses_while_a_run_holds_the_instance_terraform_would_stop(
    cli: Callable[..., Any], ec2_project: Ec2Box, project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`terraform apply` of changed user data stops and starts the instance (the AWS provider does
    it in place), cutting the training of a run that holds it. The check run before it refuses
    while any lease is live, and passes once the last run let go or its lease ran out."""
    assert cli("compute", "start", "--holder", "gh-run-7-pipeline").exit_code == 0
    held = cli("compute", "status", "--idle")
    assert held.exit_code == 1 and "Traceback" not in held.output
    assert f"instance {ec2_project.id} is held by gh-run-7-pipeline (lease until " in held.stderr
    assert "wait until `wms compute status --idle` passes, then apply" in held.stderr
    assert json.loads(cli("compute", "status", "--json").stdout)["held_by"] == "gh-run-7-pipeline"

    assert cli("compute", "stop", "--holder", "gh-run-7-pipeline").exit_code == 0
    ran_out = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="seconds")
    ec2_project.client.create_tags(  # a killed run's lease, run out: it holds nothing
        Resources=[ec2_project.id], Tags=[{"Key": "wms:lease:gh-run-6", "Value": ran_out}]
    )
    free = cli("compute", "status", "--idle")
    assert free.exit_code == 0, free.output
    assert f"no run holds instance {ec2_project.id} (stopped)" in free.stderr

    # The local backend is not the instance Terraform manages: no all-clear for it.
    monkeypatch.setenv("WMS_COMPUTE__BACKEND", "local")
    local = cli("compute", "status", "--idle")
    assert local.exit_code == 2 and 'set compute.backend = "ec2"' in local.stderr


def test_renewing_a_lease_on_a_stopped_instance_is_refused_and_takes_none(
    cli: Callable[..., Any], ec2_project: Ec2Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hold-compute renews its run's lease before a deploy that waits for the instance's runner;
    on an instance someone stopped meanwhile it leased a stopped machine, and the deploy then
    waited (holding the deploy group) for a runner that never came."""
    monkeypatch.setenv("GITHUB_RUN_ID", "7")
    assert cli("compute", "start").exit_code == 0
    ec2_project.client.stop_instances(InstanceIds=[ec2_project.id])  # by hand, between the jobs
    ec2_project.client.get_waiter("instance_stopped").wait(InstanceIds=[ec2_project.id])
    lease_before = {k: v for k, v in ec2_project.tags().items() if k.startswith(HOLDER_TAG_PREFIX)}

    renewed = cli("compute", "renew", "--holder", "gh-run-7", "--lease-minutes", "420")

    assert renewed.exit_code == 1 and "Traceback" not in renewed.output
    assert f"{ec2_project.id} is stopped: a lease would keep nothing running" in renewed.output
    assert {k: v for k, v in ec2_project.tags().items() if k.startswith(HOLDER_TAG_PREFIX)} == lease_before


def test_the_operators_maintenance_before_an_apply(
    cli: Callable[..., Any], ec2_project: Ec2Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The procedure the docs give: maintenance (exit 1 while a run still holds the instance), the
    runs end, the check passes and stays passed, apply, end."""
    assert cli("compute", "start", "--holder", "gh-run-7").exit_code == 0
    held = cli("compute", "maintenance", "--minutes", "30")
    assert held.exit_code == 1 and "Traceback" not in held.output
    assert f"instance {ec2_project.id} is held for maintenance until " in held.stderr
    assert "gh-run-7 still hold it: wait until `wms compute status --idle` passes, then apply" in held.stderr
    status = cli("compute", "status")
    assert "maintenance  until " in status.stdout and status.exit_code == 0

    assert cli("compute", "stop", "--holder", "gh-run-7").exit_code == 0
    assert cli("compute", "status", "--idle").exit_code == 0
    again = cli("compute", "maintenance")  # begun again: nothing holds it now
    assert again.exit_code == 0 and "no run holds it, and none starts it until then or" in " ".join(
        again.stdout.split()
    )

    ended = cli("compute", "maintenance", "--end")
    assert ended.exit_code == 0 and "maintenance ended; starts go on" in ended.stdout
    assert MAINTENANCE_TAG not in ec2_project.tags()

    monkeypatch.setenv("WMS_COMPUTE__BACKEND", "local")
    local = cli("compute", "maintenance")
    assert local.exit_code == 2 and 'set compute.backend = "ec2"' in local.stderr
