"""Training on the instance over SSH: a real sshd on loopback is the instance, moto's EC2 starts/stops it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from tests.conftest import TINY_SETTINGS, Ec2Box
from tests.remote.conftest import Sshd

import wms
from wms.data.store import DatasetStore
from wms.errors import ConfigError
from wms.remote.ssh import SshTarget, connect

# Runs kill and resume jobs whose leases last seconds: alone, after the parallel part of make test.
pytestmark = pytest.mark.serial

JOB_MODULE = "wms.remote.job"
# A stop from outside counts as a reclaim only while this run's lease is live (leases.interruption_of).
# The setup's 6 s lease, renewed every 2 s, can lapse on a loaded machine before the pipeline looks
# at the stopped instance; the reclaim tests hold a lease long enough to be noticed, as in use (60 min).
STOP_NOTICED_LEASE = "5"


def target(sshd: Sshd, known_hosts: Path) -> SshTarget:
    return SshTarget("127.0.0.1", sshd.port, sshd.user, str(sshd.key), known_hosts)


def test_ssh_runs_commands_and_pins_the_host_key(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    ssh = connect(target(sshd, known))
    try:
        assert ssh.run("echo hello; echo oops >&2; exit 3") == (3, "hello\n", "oops\n")
    finally:
        ssh.close()
    assert f"[127.0.0.1]:{sshd.port}" in known.read_text()  # pinned on first use
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, key = (other.with_suffix(".pub")).read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")  # as if the instance's key changed
    with pytest.raises(ConfigError, match=r"host key of 127\.0\.0\.1 changed"):
        connect(target(sshd, known))


# -- the pipeline, in its own process, training on the "instance" ---------------------------------


def descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    parents = {int(c): int(p) for c, p in zip(out[::2], out[1::2], strict=True)}
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - found
        found |= frontier
    return found


def job_processes(remote: Path) -> list[int]:
    """The training jobs running in this test's remote folder."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if JOB_MODULE in cmdline and str(remote) in cmdline:
                pids.append(int(entry.name))
    return pids


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw if b"=" in item)


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


class Setup:
    """A project whose compute is the moto instance and whose SSH host is the loopback sshd."""

    def __init__(
        self, tmp_path: Path, sshd: Sshd, box: Ec2Box, remote: Path, mlflow: str, batch: Path, epochs: int
    ) -> None:
        self.root = tmp_path / "project"
        self.root.mkdir()
        (self.root / "wms.toml").write_text(TINY_SETTINGS)
        self.remote, self.batch, self.box, self.mlflow = remote, batch, box, mlflow
        self.experiment = f"remote-{uuid.uuid4().hex[:8]}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WMS_")} | {
            "WMS_COMPUTE__BACKEND": "ec2",
            "WMS_COMPUTE__INSTANCE_ID": box.id,
            "WMS_COMPUTE__POLL_SECONDS": "0.05",
            "WMS_COMPUTE__READY_PROBE": "tcp",
            "WMS_COMPUTE__HOST": "127.0.0.1",
            "WMS_COMPUTE__SSH_PORT": str(sshd.port),
            "WMS_COMPUTE__SSH_USER": sshd.user,
            "WMS_COMPUTE__SSH_KEY": str(sshd.key),
            "WMS_COMPUTE__REMOTE_DIR": str(remote),
            "WMS_COMPUTE__LEASE_MINUTES": "0.1",
            "WMS_TRACKING__URI": mlflow,
            "WMS_TRACKING__EXPERIMENT": self.experiment,
            "WMS_TRACKING__MODEL_NAME": self.experiment,  # the server is shared: a registry of its own
            "WMS_TRAIN__EPOCHS": str(epochs),
            "WMS_DEPLOY__IN_PIPELINE": "false",
        }

    def start(self, *args: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "wms", "pipeline", *args]
        self.log = self.root.parent / f"pipeline-{len(list(self.root.parent.glob('pipeline-*')))}.log"
        self.proc = subprocess.Popen(
            cmd, cwd=self.root, env=self.env, stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True
        )
        return self.proc

    def stderr(self) -> str:
        return self.log.read_text()

    def record(self) -> dict[str, Any]:
        files = list((self.root / ".wms" / "runs").glob("*/run.json"))
        return json.loads(files[0].read_text()) if files else {}

    def job_started(self) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"wms exited early ({self.proc.returncode}): {self.stderr()[-3000:]}")
        job = self.record().get("outputs", {}).get("remote_job")
        return job if job and job_processes(self.remote) else None

    def training_runs(self) -> list[Any]:
        import mlflow

        client = mlflow.MlflowClient(self.mlflow)
        experiment = client.get_experiment_by_name(self.experiment)
        return client.search_runs([experiment.experiment_id]) if experiment else []

    def artifacts(self, run_id: str, path: str) -> list[Any]:
        import mlflow

        return list(mlflow.MlflowClient(self.mlflow).list_artifacts(run_id, path))


@pytest.fixture
def setup(
    tmp_path: Path,
    sshd: Sshd,
    ec2_box: Ec2Box,
    seeded_remote: Path,
    mlflow_server: str,
    make_batch: Callable[..., Path],
) -> Callable[[int], Setup]:
    return lambda epochs: Setup(
        tmp_path, sshd, ec2_box, seeded_remote, mlflow_server, make_batch("b", count=40, seed=7), epochs
    )


@pytest.mark.slow
def test_the_pipeline_trains_on_the_instance_and_survives_a_dropped_connection(
    setup: Callable[[int], Setup], sshd: Sshd
) -> None:
    s = setup(6)
    # A photo `wms data forget` erased from the store, still on the instance from an earlier job:
    # a sent blob, and the training cache's arrays.
    erased = uuid.uuid4().hex * 2
    DatasetStore(str(s.root / ".wms" / "store")).erase({erased: {"pair": "gone", "versions": []}})
    (s.remote / "blobs").mkdir(exist_ok=True)
    (s.remote / "blobs" / erased).write_bytes(b"their photo")
    (s.remote / "cache").mkdir(exist_ok=True)
    (s.remote / "cache" / "0123456789abcdef0123.images.npy").write_bytes(b"arrays of it")
    proc = s.start("run", "--new-data", str(s.batch))
    try:
        job = wait_until(s.job_started, 180, "the remote training job")
        (pid,) = job_processes(s.remote)
        assert pid not in descendants(proc.pid), "the job must not run in the pipeline's process tree"
        assert "SSH_CONNECTION" in environ(pid), "the job must have been started by sshd"
        assert Path(environ(pid)["PYTHONPATH"]).name == job["wheel_sha256"][:16]
        time.sleep(2)
        assert sshd.drop_connections() >= 1  # the pipeline's connection is cut mid-training
        proc.wait(timeout=300)
        err = s.stderr()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "SSH connection to 127.0.0.1 lost" in err and "reconnected to 127.0.0.1" in err
    record = s.record()
    assert record["promoted"] is True
    assert s.box.state() == "stopped"
    (run,) = s.training_runs()
    assert run.data.tags["wms.remote_host"] == "127.0.0.1"
    assert run.data.tags["wms.wheel_sha256"] == record["outputs"]["remote_job"]["wheel_sha256"]
    assert run.data.tags["wms.code_path"].startswith(str(s.remote / "code"))
    assert record["outputs"]["mlflow_run_id"] == run.info.run_id
    assert "worst/index.html" in [a.path for a in s.artifacts(run.info.run_id, "worst")]
    assert not job_processes(s.remote)
    (spec,) = s.remote.glob(f"jobs/{record['outputs']['remote_job']['job_id']}/job.json")
    assert "ssh_key" not in spec.read_text()  # compute.ssh_key may be the private key itself
    assert erased in json.loads(spec.read_text())["erased"]
    assert not (s.remote / "blobs" / erased).exists() and len(list((s.remote / "blobs").iterdir())) >= 80
    assert not (s.remote / "cache" / "0123456789abcdef0123.images.npy").exists()
    assert "1 sent file(s) and 1 cached array(s) deleted on this instance" in err


@pytest.mark.slow
def test_sigterm_stops_the_remote_job_then_the_instance(setup: Callable[[int], Setup]) -> None:
    s = setup(100000)
    proc = s.start("run", "--new-data", str(s.batch))
    try:
        wait_until(s.job_started, 180, "the remote training job")
        time.sleep(7)  # longer than the 6 s lease: only the pipeline's renewals keep the instance up
        assert s.box.state() == "running"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        err = s.stderr()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted (SIGTERM): run " in err and "compute was released" in err and "stopping job" in err
    assert "Traceback" not in err
    assert not job_processes(s.remote), "a training job outlived the pipeline"
    assert s.box.state() == "stopped"
    assert (s.record()["status"], s.record()["failed_stage"]) == ("failed", "train")


@pytest.mark.slow
def test_resume_after_the_local_process_died_reattaches_without_training_again(
    setup: Callable[[int], Setup],
) -> None:
    s = setup(6)
    (s.remote / "jobs").mkdir(exist_ok=True)
    jobs_before = set((s.remote / "jobs").iterdir())
    proc = s.start("run", "--new-data", str(s.batch))
    try:
        job = wait_until(s.job_started, 180, "the remote training job")
    finally:
        proc.kill()  # SIGKILL: no cleanup at all; the job trains on, detached
        proc.wait()
    paused = job_processes(s.remote)
    assert paused, "the job must outlive the process that started it"
    # Paused until the resume has looked, so that it finds the job still training: on a busy
    # machine the job's six epochs could end first, and the resume would rightly collect them.
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        resumed = s.start("resume", s.record()["run_id"])
        wait_until(
            lambda: resumed.poll() is not None or "reattaching" in s.stderr(),
            180,
            "the resume's look at the job",
        )
    finally:
        for pid in paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    out, _ = resumed.communicate(timeout=300)
    err = s.stderr()
    assert resumed.returncode == 0, err[-3000:]
    assert f"reattaching to job {job['job_id']}, still training on 127.0.0.1" in err
    assert "val Dice" in out  # the job's epochs, shown again from its progress file
    record = s.record()
    assert record["promoted"] is True and record["outputs"]["remote_job"]["job_id"] == job["job_id"]
    assert set((s.remote / "jobs").iterdir()) - jobs_before == {s.remote / "jobs" / job["job_id"]}
    assert len(s.training_runs()) == 1, "resume must not train a second time"
    assert s.box.state() == "stopped"


@pytest.mark.slow
def test_a_reclaimed_instance_is_started_again_and_the_job_resumes_from_its_checkpoint(
    setup: Callable[[int], Setup], sshd: Sshd
) -> None:
    epochs = 8
    s = setup(epochs)
    s.env["WMS_COMPUTE__LEASE_MINUTES"] = STOP_NOTICED_LEASE
    proc = s.start("run", "--new-data", str(s.batch))
    try:
        job = wait_until(s.job_started, 180, "the remote training job")
        folder = Path(job["job_dir"])
        wait_until((folder / "checkpoint.pt").is_file, 120, "the job's first checkpoint")
        (pid,) = job_processes(s.remote)
        # AWS stops the spot instance: its state first, then the shutdown ends the job (SIGTERM,
        # as systemd sends it) and every SSH session.
        s.box.client.stop_instances(InstanceIds=[s.box.id])
        os.kill(pid, signal.SIGTERM)
        sshd.drop_connections()
        proc.wait(timeout=300)
        err = s.stderr()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert (
        "the instance was stopped under the job, not by WMS (Client.UserInitiatedShutdown): starting it "
        f"again and resuming job {job['job_id']} from its checkpoint; retry 1 of 3"
    ) in err
    again = re.search(
        rf"training job {job['job_id']} started again on 127\.0\.0\.1 \(pid (\d+)\), from its checkpoint"
        r"[\s\S]*?127\.0\.0\.1: continuing MLflow run \S+ from epoch (\d+) \(its checkpoint holds epochs? 1",
        err,
    )
    assert again, err[-3000:]
    resumed_at = int(again[2])  # what the job read from its checkpoint, not from the progress file
    assert resumed_at >= 2 and int(again[1]) != pid
    # The job went on in its folder from the checkpoint: no epoch before it trained twice.
    events = [json.loads(line) for line in (folder / "progress.jsonl").read_text().splitlines()]
    notes = [i for i, e in enumerate(events) if e["event"] == "note" and "continuing MLflow run" in e["text"]]
    (restart,) = notes
    assert next(e["epoch"] for e in events[restart:] if e["event"] == "epoch_started") == resumed_at
    assert [e["epoch"] for e in events if e["event"] == "epoch_done"] == list(range(1, epochs + 1))
    assert not (folder / "checkpoint.pt").exists()  # the result is logged; the state went with it
    # One MLflow run holds every epoch.
    (run,) = s.training_runs()
    assert run.info.status == "FINISHED"
    import mlflow

    history = mlflow.MlflowClient(s.mlflow).get_metric_history(run.info.run_id, "val_dice")
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))
    record = s.record()
    assert record["promoted"] is True and record["outputs"]["mlflow_run_id"] == run.info.run_id
    assert record["outputs"]["remote_job"]["restarts"] == 1
    assert s.box.state() == "stopped"
    assert not job_processes(s.remote)


@pytest.mark.slow
def test_with_no_spot_retries_a_reclaim_fails_the_run_in_one_line_and_the_instance_stays_stopped(
    setup: Callable[[int], Setup],
) -> None:
    s = setup(100000)
    s.env["WMS_COMPUTE__SPOT_RETRIES"] = "0"
    s.env["WMS_COMPUTE__LEASE_MINUTES"] = STOP_NOTICED_LEASE
    proc = s.start("run", "--new-data", str(s.batch))
    try:
        job = wait_until(s.job_started, 180, "the remote training job")
        s.box.client.stop_instances(InstanceIds=[s.box.id])
        for pid in job_processes(s.remote):
            os.kill(pid, signal.SIGKILL)  # the shutdown's end, without the job's last word
        proc.wait(timeout=120)
        err = s.stderr()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-3000:]
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line == (
        "error: the instance was stopped under the job, not by WMS (Client.UserInitiatedShutdown) during "
        f"job {job['job_id']}, and compute.spot_retries = 0 allows no retry; the job's folder and "
        "checkpoint stay on the instance (raise compute.spot_retries to retry more); "
        f"continue with `wms pipeline resume {s.record()['run_id']}`"
    )
    assert "starting it again" not in err and "Traceback" not in err
    assert s.box.state() == "stopped"
    assert (s.record()["status"], s.record()["failed_stage"]) == ("failed", "train")


def test_an_earlier_job_is_collected_if_it_finished_and_replaced_if_it_failed(
    sshd: Sshd, seeded_remote: Path, project_dir: Path
) -> None:
    """What resume does with the job a run recorded, by the files the job left on the instance."""
    from wms.config import load_settings
    from wms.remote.entry import target_for
    from wms.remote.trainer import RemoteTrainer

    sets = {"compute": {"ssh_port": sshd.port, "ssh_user": sshd.user, "ssh_key": str(sshd.key)}}
    project = load_settings(start=project_dir, overrides=sets)
    notes: list[str] = []
    trainer = RemoteTrainer(project, target_for(project, "127.0.0.1"), notes.append)

    def job(name: str, exit_record: dict[str, Any] | None) -> dict[str, Any]:
        folder = seeded_remote / "jobs" / name
        folder.mkdir(parents=True)
        if exit_record is not None:
            (folder / "exit.json").write_text(json.dumps(exit_record))
        scores = [{"id": "a", "dice": 0.9, "iou": 0.8}]
        (folder / "train.json").write_text(
            json.dumps(
                {
                    "run_id": "r1",
                    "model_sha256": "0" * 64,
                    "test_metrics": {"dice": 0.9},
                    "test_scores": scores,
                }
            )
        )
        return {"host": "127.0.0.1", "job_id": name, "job_dir": str(folder), "pid": 2**22 + 7}

    finished = job(f"done-{uuid.uuid4().hex[:6]}", {"code": 0})
    never = lambda _job: pytest.fail("a finished job must not be submitted again")  # noqa: E731
    trained = trainer.train(project_dir, "v1", None, project_dir / "run", never, previous=finished)
    assert (trained.run_id, trained.test_metrics["dice"]) == ("r1", 0.9)
    assert f"job {finished['job_id']} on 127.0.0.1 finished: collecting its result" in notes
    assert trainer._earlier(job(f"failed-{uuid.uuid4().hex[:6]}", {"code": 1, "error": "a bug"})) is None
    stopped = job(f"stopped-{uuid.uuid4().hex[:6]}", {"code": 130, "error": "SIGTERM"})
    assert trainer._earlier(stopped) is None  # stopped before its first checkpoint
    assert trainer._earlier(job(f"gone-{uuid.uuid4().hex[:6]}", None)) is None  # no exit record, no process
    assert trainer._earlier(finished | {"host": "10.0.0.9"}) is None  # another instance's job
    assert sum("training again" in n for n in notes) == 4

    # Stopped midway with a checkpoint (an instance reclaimed past compute.spot_retries, Ctrl-C):
    # `wms pipeline resume` starts it again in its folder, with the code it ran.
    folder = Path(stopped["job_dir"])
    (folder / "checkpoint.pt").write_bytes(b"state")
    (folder / "progress.jsonl").write_text(
        "".join(f'{{"event": "epoch_done", "epoch": {e}}}\n' for e in (1, 2))
    )
    launch = {"python": sys.executable, "code": str(Path(wms.__file__).parents[1])}
    restarted = trainer._earlier(stopped | launch)
    assert restarted is not None and restarted["restarts"] == 1 and restarted["pid"] != stopped["pid"]
    assert not (folder / "train.json").exists()  # the last attempt's files are cleared
    assert f"job {stopped['job_id']} was stopped midway: starting it again from its checkpoint" in notes
    assert notes[-1].startswith(f"training job {stopped['job_id']} started again on 127.0.0.1 (pid ")
    assert notes[-1].endswith("), from its checkpoint")
    # No job.json here, so the job ends at once; a real one goes on from the checkpoint.
    wait_until(lambda: (folder / "exit.json").is_file(), 60, "the restarted job to end")
    trainer.close()


def test_a_local_sqlite_tracking_uri_stops_before_the_instance_starts(
    setup: Callable[[int], Setup], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import Quiet

    from wms.config import load_settings
    from wms.pipeline import Pipeline

    s = setup(1)
    for name, value in s.env.items():
        if name.startswith("WMS_") and name != "WMS_TRACKING__URI":  # the default: a SQLite file here
            monkeypatch.setenv(name, value)
    project = load_settings(start=s.root)
    with pytest.raises(ConfigError, match=r"which the instance cannot reach; set tracking\.uri"):
        Pipeline(project, cast(Any, None), Quiet()).run(s.batch)
    assert s.box.state() == "stopped"
    assert not (s.root / ".wms" / "store").exists(), "nothing may be merged before the refusal"


def test_compute_exec_starts_the_instance_and_streams_the_command(
    setup: Callable[[int], Setup], sshd: Sshd
) -> None:
    s = setup(1)
    cmd = [
        sys.executable,
        "-m",
        "wms",
        "compute",
        "exec",
        "--stop",
        "--",
        "sh",
        "-c",
        "echo one; echo two; exit 4",
    ]
    done = subprocess.run(cmd, cwd=s.root, env=s.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 4, done.stderr
    assert done.stdout == "one\ntwo\n"
    assert "starting instance" in done.stderr and s.box.state() == "stopped"
    printed = subprocess.run(
        [sys.executable, "-m", "wms", "compute", "ssh", "--print"],
        cwd=s.root,
        env=s.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.returncode == 2 and "start it with `wms compute start`" in printed.stderr


def test_tracking_the_instance_cannot_reach_or_that_stops_with_it_is_refused(
    project_dir: Path, sshd: Sshd
) -> None:
    from wms.config import load_settings
    from wms.remote.entry import check_remote_settings

    def settings(uri: str, host: str) -> Any:
        compute = {"backend": "ec2", "host": host, "ssh_key": str(sshd.key)}
        return load_settings(start=project_dir, overrides={"tracking": {"uri": uri}, "compute": compute})

    with pytest.raises(ConfigError, match="loopback, which the instance cannot reach"):
        check_remote_settings(settings("http://127.0.0.1:5000", "203.0.113.7"))
    on_instance = settings("http://203.0.113.7:5000", "203.0.113.7")
    check_remote_settings(on_instance)  # `wms train` only logs there while the instance runs
    with pytest.raises(ConfigError, match="stops after training while promote"):
        check_remote_settings(on_instance, registry_after_stop=True)
    check_remote_settings(settings("http://mlflow.internal:5000", "203.0.113.7"), registry_after_stop=True)
