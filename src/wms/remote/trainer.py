"""Training on the instance over SSH, followed from here.

    trainer = RemoteTrainer(project, target_for(project, host), notify)   # target_for: wms.remote.entry
    trained = trainer.train(dataset, version, reporter, run_dir, record)

1. The wheel of this checkout is built and installed on the instance by its hash (wms.remote.package).
2. The dataset: the instance pulls an S3 store's version itself; from a folder store only the
   blobs the instance lacks are sent.
3. `python -m wms.remote.job` starts detached (setsid, nohup): it belongs to no SSH session.
4. Its progress lines are read over SFTP and shown; a dropped connection is retried with
   backoff for `compute.reconnect_seconds`, and the job trains on meanwhile. If the instance
   was stopped under it (a spot reclaim), it is started again and the job goes on from its
   checkpoint (wms.remote.reclaim).
5. Its result (MLflow run id, per-image test scores) is fetched into `train.json`.

`record` receives the job's address as soon as it starts, so the pipeline's run record names
it and `wms pipeline resume` can reattach (or collect a finished job) without training again.
Interrupted here (SIGINT/SIGTERM), the job is stopped before the exception goes on, so the
instance is never stopped under a job that would then be lost silently.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wms.compute.base import Compute, Notify, quiet
from wms.config import Project
from wms.errors import BackendError, ConfigError, TrainError
from wms.guards import Interrupted
from wms.remote.dataset import job_tracking_uri, send_dataset
from wms.remote.job import CHECKPOINT_FILE, EXIT_FILE, JOB_FILE, PROGRESS_FILE, RESULT_FILE
from wms.remote.package import build_wheel, install
from wms.remote.reclaim import Reclaimed, Reclaims
from wms.remote.ssh import Ssh, SshTarget, connect, dropped, quote
from wms.runs import UNVERSIONED

if TYPE_CHECKING:
    from wms.runs import TrainedRun
    from wms.train.progress import TrainReporter

Record = Callable[[dict[str, Any]], None]
ALIVE_EVERY_SECONDS = 5.0


class RemoteTrainer:
    """Runs one training job on the instance and follows it to its result.

    With `compute` (the backend that started the instance), a job whose instance went down
    under it is resumed on the instance started again (wms.remote.reclaim).
    """

    def __init__(
        self,
        project: Project,
        target: SshTarget,
        notify: Notify = quiet,
        poll_seconds: float = 1.0,
        compute: Compute | None = None,
    ):
        self.project = project
        self.target = target
        self.notify = notify
        self.poll = poll_seconds
        self.compute = compute
        self.reconnect_seconds = project.settings.compute.reconnect_seconds
        self.reclaims = Reclaims(compute, project.settings.compute, notify) if compute else None
        self._ssh: Ssh | None = None
        self._instance: str | None = None
        self._shown: dict[str, int] = {}  # job id: how far its progress file was shown

    # -- the whole job ------------------------------------------------------------------------
    def train(
        self,
        dataset: Path,
        version: str,
        reporter: TrainReporter | None,
        result_dir: Path,
        record: Record,
        previous: dict[str, Any] | None = None,
    ) -> TrainedRun:
        """Train `dataset` (version `version`) on the instance; the result lands in result_dir/train.json.

        With `previous` (a job this run started before), reattach to it or collect its result
        instead of training again; one stopped midway goes on from its checkpoint, and one that
        failed (or left no checkpoint) is replaced by a new job.
        """
        job = self._earlier(previous) if previous is not None else None
        if job is None:
            job = self.submit(dataset, version)
        if job != previous:  # started, started again, or found at a new address
            record(job)
        while True:
            try:
                return self.follow(job, reporter, result_dir)
            except Reclaimed as reclaim:
                job = self._recover(job, reclaim.reason)
                record(job)

    def _earlier(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """An earlier job of this run to follow (finished, training, or started again); None: train anew."""
        if not self._same_instance(job):
            self.notify(f"the earlier job ran on {job.get('host')}, not {self.target.host}: training again")
            return None
        ssh = self._connection()
        exit_text = ssh.read_text(f"{job['job_dir']}/{EXIT_FILE}")
        code = json.loads(exit_text).get("code") if exit_text is not None else None
        if code == 0:
            self.notify(f"job {job['job_id']} on {self.target.host} finished: collecting its result")
            return job
        if exit_text is None and self._alive(ssh, job):
            self.notify(f"reattaching to job {job['job_id']}, still training on {self.target.host}")
            return job | {"host": self.target.host}
        stopped = exit_text is None or code == Interrupted.exit_code  # killed, or stopped by a signal
        checkpoint = f"{job['job_dir']}/{CHECKPOINT_FILE}"
        if stopped and "python" in job and ssh.run(f"test -f {quote(checkpoint)}")[0] == 0:
            self.notify(f"job {job['job_id']} was stopped midway: starting it again from its checkpoint")
            return self.restart(job)
        self.notify(f"job {job['job_id']} on {self.target.host} ended without a result: training again")
        return None

    def _same_instance(self, job: dict[str, Any]) -> bool:
        """Whether `job` ran on this instance: by id where known (a stop and start may move its
        address), else by address."""
        if job.get("instance_id") and self._instance_id():
            return bool(job["instance_id"] == self._instance_id())
        return job.get("host") == self.target.host

    def _instance_id(self) -> str | None:
        if self._instance is None and self.compute is not None:
            self._instance = self.compute.status().instance_id
        return self._instance

    # -- submit -------------------------------------------------------------------------------
    def submit(self, dataset: Path, version: str) -> dict[str, Any]:
        """Install the code, send the data, start the job detached; the job's record."""
        ssh = self._connection()
        cfg = self.project.settings.compute
        root = ssh.check(
            f"mkdir -p {cfg.remote_dir} && cd {cfg.remote_dir} && "
            "mkdir -p envs code blobs jobs incoming && pwd",
            f"prepare {cfg.remote_dir}",
        ).strip()
        with tempfile.TemporaryDirectory(prefix="wms-wheel-") as tmp:
            bundle = build_wheel(Path(tmp))
            install(ssh, root, bundle, self.project.settings.compute.remote_python, self.notify)
        store = self.project.settings.store.url
        spec_dataset = send_dataset(ssh, root, dataset, version, store, self.notify, self.target.host)
        job_id = f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        job_dir = f"{root}/jobs/{job_id}"
        settings = self.project.settings.model_dump(mode="json")
        # The job starts and stops nothing, and compute.ssh_key may be the private key itself
        # (the EC2_SSH_KEY secret): it must not land in a file on the instance.
        del settings["compute"]
        settings["tracking"]["uri"] = job_tracking_uri(self.project)
        settings["train"]["cache_dir"] = f"{root}/cache"
        spec = {
            "job_id": job_id,
            "settings": settings,
            "dataset": spec_dataset,
            "dataset_version": version,
            "blobs_dir": f"{root}/blobs",
            "erased": self._erased(version),
            "tags": {
                "wms.git_commit": bundle.commit,
                "wms.wheel_sha256": bundle.sha256,
                "wms.remote_host": self.target.host,
                "wms.remote_job": job_id,
            },
        }
        ssh.check(f"mkdir -p {quote(job_dir)}", "make the job folder")
        ssh.write_text(f"{job_dir}/{JOB_FILE}", json.dumps(spec))
        python = f"{root}/envs/{bundle.deps_key}/bin/python"
        code = f"{root}/code/{bundle.code_key}"
        pid = self._launch(ssh, job_dir, python, code)
        self.notify(
            f"training job {job_id} started on {self.target.host} (pid {pid}, wheel {bundle.code_key})"
        )
        return {
            "host": self.target.host,
            "instance_id": self._instance_id(),
            "job_id": job_id,
            "job_dir": job_dir,
            "pid": pid,
            "wheel_sha256": bundle.sha256,
            "commit": bundle.commit,
            "python": python,  # what a restart in the same folder runs (wms.remote.reclaim)
            "code": code,
        }

    def _erased(self, version: str) -> list[str]:
        """The photos (sha256) `wms data forget` erased from the store: the job deletes its
        copies on the instance (the training cache, a sent blob). None for `wms train DIR`."""
        if version == UNVERSIONED:
            return []
        from wms.data.store import open_store

        return sorted(open_store(self.project).erased_blobs())

    def _launch(self, ssh: Ssh, job_dir: str, python: str, code: str) -> int:
        """Start `python -m wms.remote.job JOB_DIR` detached from this session; its pid."""
        start = (
            f"cd {quote(job_dir)} || exit 1; PYTHONPATH={quote(code)} PYTHONUNBUFFERED=1 PYTHONNOUSERSITE=1 "
            f"setsid nohup {quote(python)} -m wms.remote.job {quote(job_dir)} "
            ">> out.log 2>&1 < /dev/null & echo $!"
        )
        return int(ssh.check(start, "start the training job").strip().splitlines()[-1])

    def restart(self, job: dict[str, Any]) -> dict[str, Any]:
        """Start a stopped job again in its folder: it goes on from its checkpoint, in its MLflow run."""
        ssh, folder = self._connection(), job["job_dir"]
        stale = [f"{folder}/{name}" for name in (EXIT_FILE, RESULT_FILE)]
        ssh.check(f"rm -f {quote(*stale)}", "clear the job's last exit")
        checkpoint = ssh.run(f"test -f {quote(folder + '/' + CHECKPOINT_FILE)}")[0] == 0
        pid = self._launch(ssh, folder, job["python"], job["code"])
        # Which epoch it goes on from, the job says itself once it has read its checkpoint: the
        # progress file can lag the checkpoint by an epoch when the stop fell between the two.
        self.notify(
            f"training job {job['job_id']} started again on {self.target.host} (pid {pid}), "
            + ("from its checkpoint" if checkpoint else "from its first epoch (no checkpoint yet)")
        )
        return job | {"host": self.target.host, "pid": pid, "restarts": int(job.get("restarts", 0)) + 1}

    def _recover(self, job: dict[str, Any], reason: str) -> dict[str, Any]:
        """After a reclaim: the instance started again, the job started again on it (or an error)."""
        assert self.reclaims is not None  # only they raise Reclaimed
        self._drop()
        host = self.reclaims.bring_back(reason, job["job_id"], self.target.host)
        self.target = replace(self.target, host=host)
        try:
            self._end(job)  # after a real stop none is left; never two processes in one folder
            return self.restart(job)
        except Exception as exc:
            if not dropped(exc) or isinstance(exc, BackendError):
                raise
            raise BackendError(
                f"lost the SSH connection to {host} while starting job {job['job_id']} again ({exc}); "
                "its checkpoint stays there"
            ) from None

    # -- follow ---------------------------------------------------------------------------------
    def follow(self, job: dict[str, Any], reporter: TrainReporter | None, result_dir: Path) -> TrainedRun:
        """Show the job's progress until it ends; its result. Stops the job when interrupted."""
        try:
            exit_record = self._follow(job, reporter)
        except Interrupted:
            self.notify(f"interrupted: stopping job {job['job_id']} on {self.target.host} first")
            self.stop(job)
            raise
        if exit_record.get("code") != 0:
            self._check_reclaim()  # a job its instance's shutdown stopped exits as if by SIGTERM
            raise TrainError(
                f"training on {self.target.host} failed: {exit_record.get('error') or 'no reason given'} "
                f"(its log: {job['job_dir']}/out.log)"
            )
        return self._collect(job, result_dir)

    def _follow(self, job: dict[str, Any], reporter: TrainReporter | None) -> dict[str, Any]:
        progress, exit_path = f"{job['job_dir']}/{PROGRESS_FILE}", f"{job['job_dir']}/{EXIT_FILE}"
        lost_since, delay, last_alive = None, 1.0, time.monotonic()
        # A job started again appends to its progress file: what was shown is not shown twice.
        offset = self._shown.get(job["job_id"], 0)
        while True:
            try:
                ssh = self._connection()
                if lost_since is not None:
                    self.notify(f"reconnected to {self.target.host}; the job went on meanwhile")
                    lost_since, delay = None, 1.0
                offset = self._show(ssh.read_from(progress, offset), offset, reporter)
                self._shown[job["job_id"]] = offset
                exit_text = ssh.read_text(exit_path)
                if exit_text is not None:
                    offset = self._show(ssh.read_from(progress, offset), offset, reporter)
                    self._shown[job["job_id"]] = offset
                    return dict(json.loads(exit_text))
                if time.monotonic() - last_alive >= ALIVE_EVERY_SECONDS:
                    if not self._alive(ssh, job) and ssh.read_text(exit_path) is None:
                        self._check_reclaim()
                        tail = ssh.run(f"tail -n 5 {quote(job['job_dir'] + '/out.log')}")[1].strip()
                        raise TrainError(
                            f"the training job on {self.target.host} died without a result "
                            f"(killed, or the instance restarted); its log ends: {tail or '(empty)'}"
                        )
                    last_alive = time.monotonic()
                time.sleep(self.poll)
            except (TrainError, ConfigError, Reclaimed):
                raise
            except Exception as exc:
                if not dropped(exc):
                    raise
                self._drop()
                self._check_reclaim()  # a stopped instance does not come back by waiting
                now = time.monotonic()
                lost_since = lost_since or now
                if now - lost_since > self.reconnect_seconds:
                    raise BackendError(
                        f"lost the SSH connection to {self.target.host} for {now - lost_since:.0f} s "
                        f"({exc}); the job may still be training there"
                    ) from None
                self.notify(f"SSH connection to {self.target.host} lost ({exc}); retrying in {delay:.0f} s")
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _show(self, chunk: bytes, offset: int, reporter: TrainReporter | None) -> int:
        """Pass the complete lines of `chunk` on; the offset after them."""
        complete = chunk[: chunk.rfind(b"\n") + 1]
        for line in complete.decode(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = event.get("event")
            if kind == "note":
                self.notify(f"  {self.target.host}: {event.get('text', '')}")
            elif reporter is None:
                continue
            elif kind == "epoch_started":
                reporter.epoch_started(event["epoch"], event["epochs"], event["steps"])
            elif kind == "step":
                reporter.step_done(event["loss"])
            elif kind == "epoch_done":
                reporter.epoch_done(event["epoch"], event["metrics"])
            elif kind == "refine_pass_done":
                reporter.refine_pass_done(event["done"], event["metrics"])
        return offset + len(complete)

    def _collect(self, job: dict[str, Any], result_dir: Path) -> TrainedRun:
        from wms.runs import load_trained

        result_dir.mkdir(parents=True, exist_ok=True)
        text = self._connection().read_text(f"{job['job_dir']}/{RESULT_FILE}")
        if text is None:
            raise TrainError(
                f"the job {job['job_id']} on {self.target.host} finished but left no {RESULT_FILE}"
            )
        (result_dir / "train.json").write_text(text)
        return load_trained(result_dir)

    # -- stop -----------------------------------------------------------------------------------
    def stop(self, job: dict[str, Any], grace_seconds: float = 30) -> None:
        """Stop the job (SIGTERM to its process group, SIGKILL after `grace_seconds`); best effort."""
        marker = job["job_id"]
        try:
            self._drop()  # the old connection may be the broken one
            self._end(job, grace_seconds)
            self.notify(f"job {marker} on {self.target.host} stopped")
        except Exception as exc:  # the instance stop that follows ends it anyway
            self.notify(
                f"could not stop job {marker} on {self.target.host} ({exc}); stopping the instance ends it"
            )

    def _end(self, job: dict[str, Any], grace_seconds: float = 30) -> None:
        """End the job's process if it still runs: SIGTERM to its group, SIGKILL after `grace_seconds`."""
        pid, marker = int(job["pid"]), job["job_id"]
        rounds = max(1, int(grace_seconds / 0.5))
        script = (
            f"mine() {{ grep -q {quote(marker)} /proc/{pid}/cmdline 2>/dev/null; }}; "
            f"mine || exit 0; kill -TERM -- -{pid} 2>/dev/null || kill -TERM {pid}; "
            f"for i in $(seq 1 {rounds}); do mine || exit 0; sleep 0.5; done; kill -KILL -- -{pid}"
        )
        self._connection().run(script, timeout=grace_seconds + 30)

    # -- the connection -------------------------------------------------------------------------
    def _check_reclaim(self) -> None:
        if self.reclaims is not None:
            self.reclaims.check()

    def _alive(self, ssh: Ssh, job: dict[str, Any]) -> bool:
        code, _, _ = ssh.run(f"grep -q {quote(job['job_id'])} /proc/{int(job['pid'])}/cmdline")
        return code == 0

    def _connection(self) -> Ssh:
        if self._ssh is None:
            self._ssh = connect(self.target)
        return self._ssh

    def _drop(self) -> None:
        if self._ssh is not None:
            with suppress(Exception):  # a broken connection may fail to close; it is gone either way
                self._ssh.close()
            self._ssh = None

    def close(self) -> None:
        self._drop()
