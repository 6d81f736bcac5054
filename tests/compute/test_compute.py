"""Compute backends: the shared contract for every backend, then EC2 against moto's server."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.conftest import Ec2Box

from wms.compute import Compute, LocalCompute, make_compute
from wms.compute.ec2 import Ec2Compute
from wms.compute.leases import HOLDER_TAG_PREFIX, LEASE_TAG, MANAGED_TAG, STOPPING_TAG
from wms.config import ComputeSettings
from wms.errors import BackendError, CapacityError, ConfigError


def ec2_settings(box: Ec2Box, **changes: Any) -> ComputeSettings:
    return ComputeSettings(backend="ec2", instance_tag=box.tag, poll_seconds=0.02, **changes)


class ComputeContract:
    """What every backend promises; a backend's test class only says how to build it."""

    @pytest.fixture
    def compute(self) -> Compute:
        raise NotImplementedError

    def test_start_twice_leaves_it_running(self, compute: Compute) -> None:
        assert compute.start().state == "running"
        assert compute.start().state == "running"
        assert compute.wait_ready().state == "running"
        assert compute.status().state == "running"

    def test_stop_twice_leaves_it_stopped(self, compute: Compute) -> None:
        compute.start()
        assert compute.stop().state == "stopped"
        assert compute.stop().state == "stopped"

    def test_releasing_the_lease_leaves_it_running(self, compute: Compute) -> None:
        compute.start()
        compute.release_lease()
        compute.release_lease()
        assert compute.status().state == "running"

    def test_a_machine_it_started_is_not_interrupted(self, compute: Compute) -> None:
        compute.start()
        assert compute.interruption() is None
        compute.stop()
        assert compute.interruption() is None  # stopped by WMS: nothing to resume


class TestLocal(ComputeContract):
    @pytest.fixture
    def compute(self) -> Compute:
        return make_compute(ComputeSettings())

    def test_is_the_default(self) -> None:
        assert isinstance(make_compute(ComputeSettings()), LocalCompute)


class TestEc2(ComputeContract):
    @pytest.fixture
    def compute(self, ec2_box: Ec2Box) -> Compute:
        return make_compute(ec2_settings(ec2_box))

    def test_start_reports_address_and_tags_a_lease(self, ec2_box: Ec2Box) -> None:
        status = make_compute(ec2_settings(ec2_box, lease_minutes=30)).start()
        assert (status.state, status.instance_id) == ("running", ec2_box.id)
        assert status.public_ip and status.mlflow_url == f"http://{status.public_ip}:5000"
        assert status.ssh_command == f"ssh -i ~/.ssh/wms.pem ubuntu@{status.public_ip}"
        tags = ec2_box.tags()
        assert tags[MANAGED_TAG] == "true"
        expires = datetime.fromisoformat(tags[LEASE_TAG])
        assert timedelta(minutes=29) < expires - datetime.now(UTC) <= timedelta(minutes=30)
        assert status.billed_seconds is not None and status.billed_seconds >= 0

    def test_stop_removes_the_lease(self, ec2_box: Ec2Box) -> None:
        compute = make_compute(ec2_settings(ec2_box))
        compute.start()
        stopped = compute.stop()
        assert ec2_box.state() == "stopped"
        assert LEASE_TAG not in ec2_box.tags()
        assert stopped.billed_seconds is not None and stopped.billed_seconds >= 0

    def test_found_by_id_as_well(self, ec2_box: Ec2Box) -> None:
        cfg = ComputeSettings(backend="ec2", instance_id=ec2_box.id, poll_seconds=0.02)
        assert make_compute(cfg).start().instance_id == ec2_box.id

    def test_renewing_moves_the_lease_forward(self, ec2_box: Ec2Box) -> None:
        compute = make_compute(ec2_settings(ec2_box, lease_minutes=1))
        compute.start()
        first = ec2_box.tags()[LEASE_TAG]
        longer = make_compute(ec2_settings(ec2_box, lease_minutes=90))
        assert longer.renew_lease() == ec2_box.tags()[LEASE_TAG] > first

    def test_a_lease_cut_shorter_shows_in_the_latest_lease_tag(self, ec2_box: Ec2Box) -> None:
        """The job on the instance cuts its run's 420-minute start lease to one lease: the tag a
        person reads in the EC2 console (wms:lease-expires, the latest lease) says so too, and
        still names another holder's later lease."""
        start_job = make_compute(ec2_settings(ec2_box, lease_minutes=420), holder="gh-run-7")
        start_job.start()
        job = make_compute(ec2_settings(ec2_box, lease_minutes=10), holder="gh-run-7")
        cut = job.renew_lease(held_only=True)
        assert ec2_box.tags()[LEASE_TAG] == cut == ec2_box.tags()[HOLDER_TAG_PREFIX + "gh-run-7"]
        later = make_compute(ec2_settings(ec2_box, lease_minutes=60), holder="gh-run-8").renew_lease()
        job.renew_lease(held_only=True)
        assert ec2_box.tags()[LEASE_TAG] == later

    def test_no_instance_with_the_tag_says_how_to_fix_it(self, aws_env: str) -> None:
        cfg = ComputeSettings(backend="ec2", instance_tag="Name=nothing-here")
        with pytest.raises(BackendError, match=r"no EC2 instance tagged Name=nothing-here.*terraform"):
            make_compute(cfg).status()

    def test_two_instances_with_the_tag_asks_for_the_id(self, ec2_box: Ec2Box) -> None:
        twin = Ec2Box(ec2_box.client, ec2_box.name)
        try:
            with pytest.raises(
                BackendError, match=rf"2 instances are tagged .*{twin.id}.*compute.instance_id"
            ):
                make_compute(ec2_settings(ec2_box)).status()
        finally:
            ec2_box.client.terminate_instances(InstanceIds=[twin.id])

    def test_a_terminated_instance_is_not_started(self, ec2_box: Ec2Box) -> None:
        ec2_box.client.terminate_instances(InstanceIds=[ec2_box.id])
        cfg = ComputeSettings(backend="ec2", instance_id=ec2_box.id, poll_seconds=0.02)
        with pytest.raises(BackendError, match="terminated; recreate it"):
            make_compute(cfg).start()

    def test_no_credentials_is_one_clear_line(self, ec2_box: Ec2Box, no_aws: None) -> None:
        with pytest.raises(BackendError, match="no AWS credentials"):
            make_compute(ec2_settings(ec2_box)).status()

    def test_a_stop_from_outside_under_a_live_lease_is_an_interruption(self, ec2_box: Ec2Box) -> None:
        compute = make_compute(ec2_settings(ec2_box), holder="run-1")
        compute.start()
        ec2_box.client.stop_instances(InstanceIds=[ec2_box.id])  # as AWS reclaims a spot instance
        assert compute.interruption() == "Client.UserInitiatedShutdown"  # moto's StateReason
        assert compute.interruption(holder="run-2") is None  # a holder without a lease lost nothing
        compute.stop()
        assert compute.interruption() is None and ec2_box.state() == "stopped"


class NoCapacity:
    """The real moto client, except that EC2 refuses the first `times` starts as it does spot ones."""

    def __init__(self, client: Any, code: str, times: int) -> None:
        self.client, self.code, self.times = client, code, times

    def __getattr__(self, name: str) -> Any:
        if name == "start_instances" and self.times > 0:
            from botocore.exceptions import ClientError

            self.times -= 1
            error = {"Error": {"Code": self.code, "Message": "no capacity in us-east-1a"}}
            raise ClientError(error, "StartInstances")
        return getattr(self.client, name)


@pytest.mark.parametrize("code", ["InsufficientInstanceCapacity", "IncorrectSpotRequestState"])
def test_a_start_refused_for_capacity_is_a_capacity_error(ec2_box: Ec2Box, code: str) -> None:
    compute = Ec2Compute(ec2_settings(ec2_box), client=NoCapacity(ec2_box.client, code, times=1))
    with pytest.raises(CapacityError, match=rf"EC2 cannot start {ec2_box.id} now: {code}"):
        compute.start()
    assert compute.start().state == "running"  # once there is capacity again


class InTransition:
    """The real moto client, except that the instance shows `state` for the first `times` looks."""

    def __init__(self, client: Any, state: str, times: int, status_checks: str = "ok") -> None:
        self.client, self.state, self.times, self.status_checks = client, state, times, status_checks
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append(name)
            reply = method(**kwargs)
            if name == "describe_instances" and self.times > 0:
                self.times -= 1
                for r in reply["Reservations"]:
                    for i in r["Instances"]:
                        i["State"] = {"Name": self.state}
            if name == "describe_instance_status":
                for item in reply["InstanceStatuses"]:
                    item["InstanceStatus"]["Status"] = self.status_checks
            return reply

        return call


def test_start_waits_while_the_instance_is_still_stopping(ec2_box: Ec2Box) -> None:
    client = InTransition(ec2_box.client, "stopping", times=3)
    status = Ec2Compute(ec2_settings(ec2_box), client=client).start()
    assert status.state == "running" and ec2_box.state() == "running"
    assert client.calls.count("start_instances") == 1
    assert client.calls.count("describe_instances") >= 4


def test_stop_waits_while_the_instance_is_still_pending(ec2_box: Ec2Box) -> None:
    ec2_box.client.start_instances(InstanceIds=[ec2_box.id])
    client = InTransition(ec2_box.client, "pending", times=3)
    assert Ec2Compute(ec2_settings(ec2_box), client=client).stop().state == "stopped"
    assert client.calls.count("stop_instances") == 1
    assert client.calls.index("stop_instances") > 3  # it waited for `running` first


def test_every_wait_has_a_limit_and_says_what_it_waited_for(ec2_box: Ec2Box) -> None:
    client = InTransition(ec2_box.client, "stopped", times=0, status_checks="initializing")
    compute = Ec2Compute(ec2_settings(ec2_box, start_timeout_seconds=0.2), client=client)
    with pytest.raises(
        BackendError, match=rf"gave up after 0.2 s waiting for the status checks of .*{ec2_box.id}"
    ):
        compute.start()


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


@pytest.fixture
def health_server() -> Iterator[int]:
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_tcp_probe_waits_for_the_ssh_port(ec2_box: Ec2Box, listening_port: int) -> None:
    cfg = ec2_settings(ec2_box, ready_probe="tcp", host="127.0.0.1", ssh_port=listening_port)
    compute = make_compute(cfg)
    compute.start()
    assert compute.wait_ready().state == "running"
    assert compute.status().ssh_command == f"ssh -i ~/.ssh/wms.pem -p {listening_port} ubuntu@127.0.0.1"


def test_a_probe_that_never_answers_times_out_with_its_name(ec2_box: Ec2Box) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    cfg = ec2_settings(
        ec2_box, ready_probe="tcp", host="127.0.0.1", ssh_port=closed, start_timeout_seconds=0.3
    )
    compute = make_compute(cfg)
    compute.start()
    with pytest.raises(BackendError, match=rf"waiting for TCP port {closed} \(SSH\) at 127.0.0.1") as caught:
        compute.wait_ready()
    assert str(caught.value).endswith(
        "; see how its boot went with `wms compute ssh` and `journalctl -u wms-bootstrap` there"
    )


def test_http_probe_waits_for_mlflow_health(ec2_box: Ec2Box, health_server: int) -> None:
    cfg = ec2_settings(ec2_box, ready_probe="http", host="127.0.0.1", mlflow_port=health_server)
    compute = make_compute(cfg)
    compute.start()
    assert compute.wait_ready().mlflow_url == f"http://127.0.0.1:{health_server}"


class SlowRunner:
    """A self-hosted runner that comes online on the third look."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def is_online(self, name: str) -> bool:
        self.asked.append(name)
        return len(self.asked) >= 3


def test_runner_probe_asks_the_git_host_until_the_runner_is_online(ec2_box: Ec2Box) -> None:
    runner = SlowRunner()
    compute = make_compute(ec2_settings(ec2_box, ready_probe="runner", runner_name="gpu-1"), runner)
    compute.start()
    compute.wait_ready()
    assert runner.asked == ["gpu-1"] * 3


def test_runner_probe_without_a_git_host_is_a_config_error_before_anything_starts(
    ec2_box: Ec2Box,
) -> None:
    compute = make_compute(ec2_settings(ec2_box, ready_probe="runner"))
    with pytest.raises(ConfigError, match='ready_probe = "runner" needs a git host'):
        compute.start()
    assert ec2_box.state() == "stopped" and LEASE_TAG not in ec2_box.tags()


def test_the_runner_probe_is_built_only_when_a_start_waits_for_it(ec2_box: Ec2Box) -> None:
    built: list[SlowRunner] = []

    def build() -> SlowRunner:
        built.append(SlowRunner())
        return built[-1]

    cfg = ec2_settings(ec2_box, ready_probe="runner", runner_name="gpu-1")
    make_compute(cfg, build, holder="gh-run-1").start()
    assert len(built) == 1
    other = make_compute(cfg, build, holder="gh-run-1")
    other.status()
    other.reap()
    assert other.stop().state == "stopped" and len(built) == 1


def test_reaper_stops_expired_leases_and_leaves_live_ones_alone(ec2_box: Ec2Box) -> None:
    client = ec2_box.client
    live, unmanaged = Ec2Box(client, ec2_box.name + "-live"), Ec2Box(client, ec2_box.name + "-other")
    expired = Ec2Box(client, ec2_box.name + "-expired")
    try:
        client.start_instances(InstanceIds=[ec2_box.id])
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        future = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
        for box, expires in ((ec2_box, past), (expired, past), (live, future)):
            client.create_tags(
                Resources=[box.id],
                Tags=[{"Key": MANAGED_TAG, "Value": "true"}, {"Key": LEASE_TAG, "Value": expires}],
            )
        compute = make_compute(ec2_settings(ec2_box))
        results = {r.instance_id: r for r in compute.reap()}
        states = (ec2_box.state(), expired.state(), live.state(), unmanaged.state())
        assert states == ("stopped", "stopped", "running", "running")
        assert "lease expired" in results[ec2_box.id].detail and "lease expired" in results[expired.id].detail
        assert results[live.id].state == "running"
        assert unmanaged.id not in results
        assert compute.status().instance_id == ec2_box.id  # reaping others left it on its own instance
    finally:
        client.terminate_instances(InstanceIds=[live.id, unmanaged.id, expired.id])


# -- leases with holders: one instance shared by several runs --------------------------------


def holder_tags(box: Ec2Box) -> dict[str, str]:
    return {k: v for k, v in box.tags().items() if k.startswith(HOLDER_TAG_PREFIX)}


def test_the_first_holder_to_stop_leaves_it_running_for_the_other(ec2_box: Ec2Box) -> None:
    run_a = make_compute(ec2_settings(ec2_box), holder="gh-run-1")
    run_b = make_compute(ec2_settings(ec2_box), holder="gh-run-2")
    run_a.start()
    run_b.start()
    assert set(holder_tags(ec2_box)) == {"wms:lease:gh-run-1", "wms:lease:gh-run-2"}

    kept = run_a.stop()
    assert ec2_box.state() == "running" and kept.state == "running"
    assert kept.detail == "kept running: held by gh-run-2"
    assert set(holder_tags(ec2_box)) == {"wms:lease:gh-run-2"}
    assert STOPPING_TAG not in ec2_box.tags()

    assert run_b.stop().state == "stopped" and ec2_box.state() == "stopped"
    assert not holder_tags(ec2_box) and LEASE_TAG not in ec2_box.tags()


def test_a_holder_named_per_call_overrides_the_default(ec2_box: Ec2Box) -> None:
    compute = make_compute(ec2_settings(ec2_box), holder="me@laptop")
    compute.start("gh-run-7")
    assert set(holder_tags(ec2_box)) == {"wms:lease:gh-run-7"}
    assert compute.stop().detail == "kept running: held by gh-run-7"  # me@laptop held nothing
    assert compute.stop("gh-run-7").state == "stopped"


def test_the_summary_tag_keeps_the_latest_expiry(ec2_box: Ec2Box) -> None:
    make_compute(ec2_settings(ec2_box, lease_minutes=90), holder="long").start()
    make_compute(ec2_settings(ec2_box, lease_minutes=5), holder="short").start()
    tags = ec2_box.tags()
    assert tags[LEASE_TAG] == tags["wms:lease:long"] > tags["wms:lease:short"]


def test_a_released_lease_leaves_the_instance_and_the_other_leases(ec2_box: Ec2Box) -> None:
    workflow = make_compute(ec2_settings(ec2_box, lease_minutes=5), holder="gh-run-1")
    workflow.start()
    pipeline = make_compute(ec2_settings(ec2_box, lease_minutes=90), holder="gh-run-1-pipeline")
    pipeline.renew_lease()
    assert ec2_box.tags()[LEASE_TAG] == ec2_box.tags()["wms:lease:gh-run-1-pipeline"]

    pipeline.release_lease()
    tags = ec2_box.tags()
    assert ec2_box.state() == "running" and set(holder_tags(ec2_box)) == {"wms:lease:gh-run-1"}
    assert tags[LEASE_TAG] == tags["wms:lease:gh-run-1"]  # the summary follows the leases left

    workflow.release_lease()
    assert ec2_box.state() == "running"
    assert not holder_tags(ec2_box) and LEASE_TAG not in ec2_box.tags()


def _lease(box: Ec2Box, holder: str, minutes: float) -> None:
    expires = (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat(timespec="seconds")
    box.client.create_tags(
        Resources=[box.id],
        Tags=[
            {"Key": MANAGED_TAG, "Value": "true"},
            {"Key": f"{HOLDER_TAG_PREFIX}{holder}", "Value": expires},
        ],
    )


def test_reaper_keeps_an_instance_while_any_holder_lease_is_live(ec2_box: Ec2Box) -> None:
    ec2_box.client.start_instances(InstanceIds=[ec2_box.id])
    _lease(ec2_box, "gh-run-dead", -5)
    _lease(ec2_box, "gh-run-alive", 30)
    reaper = make_compute(ec2_settings(ec2_box), holder="reaper")
    (kept,) = reaper.reap()
    assert ec2_box.state() == "running" and "held by gh-run-alive" in kept.detail

    _lease(ec2_box, "gh-run-alive", -1)
    (reaped,) = reaper.reap()
    assert ec2_box.state() == "stopped" and "lease expired" in reaped.detail
    assert not holder_tags(ec2_box) and STOPPING_TAG not in ec2_box.tags()


class LeasedMeanwhile:
    """The moto client, except that another run writes its lease just after `stop` marks the instance."""

    def __init__(self, client: Any, box: Ec2Box, holder: str) -> None:
        self.client, self.box, self.holder = client, box, holder

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(**kwargs: Any) -> Any:
            reply = method(**kwargs)
            if name == "create_tags" and any(t["Key"] == STOPPING_TAG for t in kwargs["Tags"]):
                _lease(self.box, self.holder, 30)
            return reply

        return call


def test_stop_backs_off_when_a_start_leases_the_instance_while_it_decides(ec2_box: Ec2Box) -> None:
    Ec2Compute(ec2_settings(ec2_box), holder="gh-run-1").start()
    client = LeasedMeanwhile(ec2_box.client, ec2_box, "gh-run-2")
    kept = Ec2Compute(ec2_settings(ec2_box), client=client, holder="gh-run-1").stop()
    assert kept.detail == "kept running: held by gh-run-2"
    assert ec2_box.state() == "running" and STOPPING_TAG not in ec2_box.tags()


def test_reaper_backs_off_when_a_start_leases_the_instance_while_it_decides(ec2_box: Ec2Box) -> None:
    ec2_box.client.start_instances(InstanceIds=[ec2_box.id])
    _lease(ec2_box, "gh-run-dead", -5)
    client = LeasedMeanwhile(ec2_box.client, ec2_box, "gh-run-new")
    (kept,) = Ec2Compute(ec2_settings(ec2_box), client=client).reap()
    assert ec2_box.state() == "running" and "leased meanwhile by gh-run-new" in kept.detail


class StopInProgress:
    """The moto client; another run's stop mark stays on the instance for the first `looks` describes."""

    def __init__(self, client: Any, box: Ec2Box, looks: int) -> None:
        self.client, self.box, self.looks = client, box, looks
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append(name)
            if name == "describe_instances":
                self.looks -= 1
                if self.looks == 0:  # the other run's stop saw this lease and backed off
                    self.client.delete_tags(Resources=[self.box.id], Tags=[{"Key": STOPPING_TAG}])
            return method(**kwargs)

        return call


def test_start_waits_for_another_runs_stop_to_back_off(ec2_box: Ec2Box) -> None:
    ec2_box.client.start_instances(InstanceIds=[ec2_box.id])
    mark = f"gh-run-1 {datetime.now(UTC).isoformat(timespec='seconds')}"
    ec2_box.client.create_tags(Resources=[ec2_box.id], Tags=[{"Key": STOPPING_TAG, "Value": mark}])
    client = StopInProgress(ec2_box.client, ec2_box, looks=5)
    status = Ec2Compute(ec2_settings(ec2_box), client=client, holder="gh-run-2").start()
    assert status.state == "running" and client.looks < 0  # it kept looking until the mark went
    assert "start_instances" not in client.calls


def test_a_stale_stop_mark_does_not_hold_a_start_back(ec2_box: Ec2Box) -> None:
    old = (datetime.now(UTC) - timedelta(hours=3)).isoformat(timespec="seconds")
    ec2_box.client.create_tags(
        Resources=[ec2_box.id], Tags=[{"Key": STOPPING_TAG, "Value": f"gh-run-1 {old}"}]
    )
    cfg = ec2_settings(ec2_box, stop_timeout_seconds=0.2)
    assert Ec2Compute(cfg, holder="gh-run-2").start().state == "running"


def test_a_timed_out_start_says_what_it_waited_for_as_before(ec2_box: Ec2Box) -> None:
    client = InTransition(ec2_box.client, "stopped", times=0, status_checks="initializing")
    lines: list[str] = []
    cfg = ec2_settings(ec2_box, start_timeout_seconds=0.2)
    with pytest.raises(BackendError) as caught:
        Ec2Compute(cfg, client=client, notify=lines.append).start()
    target = f"instance {ec2_box.id}"
    assert str(caught.value) == (
        f"gave up after 0.2 s waiting for the status checks of {target}; an impaired instance "
        "needs a look in the EC2 console (stop it with `wms compute stop`)"
    )
    assert lines == [
        f"starting {target}",
        f"waiting for {target} to be running (up to 0.2 s)",
        f"waiting for the status checks of {target} (up to 0.2 s)",
    ]
    assert client.calls.count("describe_instance_status") == 10  # 0.2 s at 0.02 s between looks


def test_a_runs_stop_also_drops_the_lease_its_cancelled_pipeline_left(ec2_box: Ec2Box) -> None:
    """gh-run-1's stop job after a cancel: its pipeline (gh-run-1-pipeline) never released its lease."""
    Ec2Compute(ec2_settings(ec2_box), holder="gh-run-1").start()
    _lease(ec2_box, "gh-run-1-pipeline", 60)
    _lease(ec2_box, "gh-run-12", 60)  # another run, not one of gh-run-1's
    stop = Ec2Compute(ec2_settings(ec2_box), holder="gh-run-1")
    kept = stop.stop(sub_leases=True)
    assert kept.detail == "kept running: held by gh-run-12"
    assert set(holder_tags(ec2_box)) == {"wms:lease:gh-run-12"}
    _lease(ec2_box, "gh-run-1-pipeline", 60)
    assert stop.stop().detail == "kept running: held by gh-run-1-pipeline, gh-run-12"  # only with sub_leases
    Ec2Compute(ec2_settings(ec2_box), holder="gh-run-12").stop()
    assert stop.stop(sub_leases=True).state == "stopped" and ec2_box.state() == "stopped"
    assert not holder_tags(ec2_box)


class OtherStopsMeanwhile:
    """The moto client; another holder's whole stop runs just after this stop's first look."""

    def __init__(self, client: Any, other: Ec2Compute) -> None:
        self.client, self.other, self.looks = client, other, 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(**kwargs: Any) -> Any:
            reply = method(**kwargs)
            if name == "describe_instances":
                self.looks += 1
                if self.looks == 1:
                    self.other.stop()  # it still sees this holder's lease, so it keeps the instance
            return reply

        return call


def test_two_stops_at_once_leave_no_lease_behind(ec2_box: Ec2Box) -> None:
    Ec2Compute(ec2_settings(ec2_box), holder="gh-run-1").start()
    Ec2Compute(ec2_settings(ec2_box), holder="gh-run-2").start()
    other = Ec2Compute(ec2_settings(ec2_box), holder="gh-run-2")
    client = OtherStopsMeanwhile(ec2_box.client, other)
    stopped = Ec2Compute(ec2_settings(ec2_box), client=client, holder="gh-run-1").stop()
    assert stopped.state == "stopped" and ec2_box.state() == "stopped"
    assert not holder_tags(ec2_box) and LEASE_TAG not in ec2_box.tags()


def test_a_summary_left_without_holders_is_no_lease_to_the_reaper(ec2_box: Ec2Box) -> None:
    compute = Ec2Compute(ec2_settings(ec2_box), holder="gh-run-1")
    compute.start()
    ec2_box.client.delete_tags(Resources=[ec2_box.id], Tags=[{"Key": "wms:lease:gh-run-1"}])
    assert LEASE_TAG in ec2_box.tags()  # stale: its holder is gone
    (reaped,) = compute.reap()
    assert ec2_box.state() == "stopped" and "no readable lease" in reaped.detail
