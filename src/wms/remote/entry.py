"""The two ways training reaches the instance: the pipeline's train stage, and `wms train`.

Both refuse settings that cannot work remotely (`check_remote_settings`) before anything
starts, and both reach the instance as compute.* describes it (`target_for`).
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from wms.compute.base import Compute, Notify, quiet
from wms.compute.hold import renew_within_limit
from wms.config import Project
from wms.errors import BackendError, ConfigError
from wms.remote.dataset import job_tracking_uri
from wms.remote.package import source_checkout
from wms.remote.ssh import SshTarget
from wms.remote.trainer import RemoteTrainer
from wms.runs import UNVERSIONED

if TYPE_CHECKING:
    from wms.runs import PipelineRun, TrainedRun
    from wms.train.progress import TrainReporter


def target_for(project: Project, host: str) -> SshTarget:
    """The instance as compute.* describes it, at `host`."""
    cfg = project.settings.compute
    known = project.path(cfg.ssh_known_hosts) if cfg.ssh_known_hosts else project.state_dir / "known_hosts"
    return SshTarget(host=host, port=cfg.ssh_port, user=cfg.ssh_user, key=cfg.ssh_key, known_hosts=known)


LOOPBACK = ("localhost", "127.0.0.1", "::1")


def check_remote_settings(project: Project, registry_after_stop: bool = False) -> None:
    """Refuse, before anything starts, settings that cannot work with training on the instance.

    `registry_after_stop`: the caller (the pipeline) still needs the registry once the instance
    is stopped (promote, reconcile, deploy), so MLflow cannot live on the instance.
    """
    uri = project.tracking_uri
    cfg = project.settings.compute
    both = (
        "set tracking.uri to an MLflow server both machines reach (e.g. WMS_TRACKING__URI=http://HOST:5000), "
        "or compute.remote_tracking_uri to the address the instance reaches it at"
    )
    if not uri.startswith(("http://", "https://", "databricks")):
        raise ConfigError(
            f"tracking.uri is {uri!r}, which the instance cannot reach; {both}, or train here with "
            'compute.backend = "local"'
        )
    job_uri, name = (
        job_tracking_uri(project),
        "compute.remote_tracking_uri" if cfg.remote_tracking_uri else "tracking.uri",
    )
    if not job_uri.startswith(("http://", "https://", "databricks")):
        raise ConfigError(f"{name} is {job_uri!r}, which the instance cannot reach; {both}")
    if (urlparse(job_uri).hostname or "") in LOOPBACK and cfg.host not in LOOPBACK:
        raise ConfigError(
            f"{name} {job_uri} is this machine's loopback, which the instance cannot reach; {both}"
        )
    host = urlparse(uri).hostname or ""
    if registry_after_stop and host == cfg.host and host not in LOOPBACK:  # loopback: a dev setup
        raise ConfigError(
            f"tracking.uri {uri} is on the instance, which stops after training while promote, "
            "reconcile and deploy still need the registry; keep MLflow where it stays up, or run the "
            'pipeline on the instance (compute.train_on = "here", as the workflows do)'
        )
    missing = [m for m in ("paramiko", "setuptools") if importlib.util.find_spec(m) is None]
    if missing:  # found here, not after the instance has started and the data was merged
        raise ConfigError(
            f"training on the instance needs {' and '.join(missing)}, which this Python lacks; "
            "install the ec2 extra with: pip install 'wms[ec2]'"
        )
    key = project.settings.compute.ssh_key.strip()
    if not key.startswith("-----BEGIN") and not Path(key).expanduser().is_file():
        raise ConfigError(
            f"no SSH key at {key}: set compute.ssh_key to the instance's private key file "
            "(or to the key itself, e.g. WMS_COMPUTE__SSH_KEY from the EC2_SSH_KEY secret)"
        )
    source_checkout()


def train_remotely(
    project: Project,
    run: PipelineRun,
    dataset: Path,
    version: str,
    reporter: TrainReporter | None,
    notify: Notify = quiet,
    compute: Compute | None = None,
) -> TrainedRun:
    """The pipeline's train stage on the instance; the job is recorded in the run as it starts.

    With `compute` (the backend holding the instance), a job whose instance is stopped under
    it (a spot reclaim) goes on from its checkpoint once the instance runs again.
    """
    # `host` as the start found it; runs recorded before it was kept name only the public IP.
    host = project.settings.compute.host or run.compute.get("host") or run.compute.get("public_ip")
    if not host:
        raise BackendError(
            "the instance has no address to reach over SSH; attach the Elastic IP "
            "(infrastructure/terraform) or set compute.host (the seed's EC2_HOST)"
        )

    def record(job: dict[str, Any]) -> None:
        run.outputs["remote_job"] = job
        run.save()

    target = target_for(project, host).for_instance(run.compute.get("instance_id"))  # its key, at any address
    trainer = RemoteTrainer(project, target, notify, compute=compute)
    try:
        return trainer.train(dataset, version, reporter, run.run_dir, record, run.outputs.get("remote_job"))
    finally:
        trainer.close()


def train_folder_on_instance(
    project: Project, compute: Compute, dataset: Path, reporter: TrainReporter | None, notify: Notify = quiet
) -> TrainedRun:
    """`wms train` with training on the instance: start it, train there, always stop it after.

    The lease is renewed while the job runs; SIGINT/SIGTERM stop the job, then the instance.
    """
    from wms.guards import Heartbeat, signals_raise

    check_remote_settings(project)
    with signals_raise():
        try:
            since = time.monotonic()
            compute.start()
            status = compute.wait_ready()
            host = status.host
            if not host:
                raise BackendError("the instance has no address to reach over SSH; set compute.host")
            interval = project.settings.compute.lease_minutes * 60 / 3
            target = target_for(project, host).for_instance(status.instance_id)
            trainer = RemoteTrainer(project, target, notify, compute=compute)
            with (
                Heartbeat(
                    interval,
                    lambda: renew_within_limit(compute, project.settings.compute, since, notify),
                    notify,
                ),
                tempfile.TemporaryDirectory() as tmp,
            ):
                try:
                    return trainer.train(dataset, UNVERSIONED, reporter, Path(tmp), lambda _job: None)
                except BackendError as exc:  # the job's state stays on an instance stopped below
                    raise type(exc)(
                        f"{exc}; `wms train` does not go back to a job: run it again to train from the start"
                    ) from None
                finally:
                    trainer.close()
        finally:
            stopped = compute.stop()
            notify(f"compute: {stopped.state}")
