"""What a job on the instance trains on and logs to: a store version read from S3 there, or a
folder's files sent over SSH; tracking.uri, or the address the instance reaches MLflow at."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from wms.config import load_settings
from wms.errors import ConfigError
from wms.remote.dataset import job_tracking_uri, send_dataset
from wms.remote.entry import check_remote_settings
from wms.remote.package import KEEP_DAYS
from wms.runs import UNVERSIONED


class RecordingSsh:
    """The calls sending a dataset makes: mark the files in use, clear out and list, copy a file."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def write_text(self, remote: str, text: str) -> None:
        pass

    def check(self, command: str, what: str) -> str:
        return "0\n"  # none cleared out (`wc -l`), and no blob is there yet (an empty `ls`)

    def put(self, local: Path, remote: str) -> None:
        self.sent.append(local.name)


class LocalSsh:
    """The instance is a folder of this machine: its commands run in bash here, as over SSH."""

    def write_text(self, remote: str, text: str) -> None:
        Path(remote).write_text(text)

    def check(self, command: str, what: str) -> str:
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{what}: {done.stderr}"
        return done.stdout

    def put(self, local: Path, remote: str) -> None:
        shutil.copyfile(local, remote)


def test_wms_train_on_a_folder_sends_its_files_even_with_an_s3_store(make_batch: Callable[..., Path]) -> None:
    """`wms train DIR` has no store version: the instance cannot read it from S3."""
    folder, ssh, store = make_batch(count=6), RecordingSsh(), "s3://wms-data/store"
    spec = send_dataset(ssh, "/srv/wms", folder, UNVERSIONED, store, print, "gpu")  # type: ignore[arg-type]
    assert spec["kind"] == "files" and len(spec["files"]) == 12 and len(ssh.sent) == 12
    stored = send_dataset(ssh, "/srv/wms", folder, "0123456789ab", store, print, "gpu")  # type: ignore[arg-type]
    assert stored == {"kind": "store", "url": store, "version": "0123456789ab"}


def test_files_no_job_needed_lately_leave_the_instance_and_those_a_job_needs_stay(
    make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    """Every file ever sent used to stay on the instance. A file no job needed for KEEP_DAYS
    goes at the next send; an old one this job needs is marked used and stays, and is not sent."""
    root = tmp_path / "instance"
    (root / "blobs").mkdir(parents=True)
    folder, said = make_batch(count=3), []
    spec = send_dataset(LocalSsh(), str(root), folder, UNVERSIONED, "", said.append, "gpu")  # type: ignore[arg-type]
    (root / "blobs" / ("0" * 64)).write_bytes(b"a photo corrected since")
    (root / "blobs" / ("1" * 64)).write_bytes(b"sent last week")
    long_ago = time.time() - (KEEP_DAYS + 1) * 86400
    for blob in (root / "blobs").iterdir():
        if blob.name != "1" * 64:
            os.utime(blob, (long_ago, long_ago))
    again = send_dataset(LocalSsh(), str(root), folder, UNVERSIONED, "", said.append, "gpu")  # type: ignore[arg-type]
    assert again == spec
    assert {b.name for b in (root / "blobs").iterdir()} == set(spec["files"].values()) | {"1" * 64}
    assert said[-2:] == [
        f"deleted 1 file(s) on gpu that no job needed for {KEEP_DAYS} days",
        "sending 0 of 6 files to gpu (6 are there already)",
    ]
    assert all(time.time() - b.stat().st_mtime < 60 for b in (root / "blobs").iterdir())


def from_a_laptop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings of a laptop training on the instance: its key, its address, a public MLflow."""
    key = tmp_path / "wms.pem"
    key.write_text("a key")
    monkeypatch.setenv("WMS_COMPUTE__SSH_KEY", str(key))
    monkeypatch.setenv("WMS_COMPUTE__HOST", "198.51.100.7")
    monkeypatch.setenv("WMS_TRACKING__URI", "http://203.0.113.5:5000")


def test_the_job_logs_where_the_instance_reaches_mlflow(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Split layout from a laptop: MLflow's public address here, its private one on the instance."""
    from_a_laptop(monkeypatch, tmp_path)
    assert job_tracking_uri(load_settings(start=project_dir)) == "http://203.0.113.5:5000"
    monkeypatch.setenv("WMS_COMPUTE__REMOTE_TRACKING_URI", "http://10.0.1.20:5000")
    project = load_settings(start=project_dir)
    assert job_tracking_uri(project) == "http://10.0.1.20:5000"
    check_remote_settings(project)
    monkeypatch.setenv("WMS_COMPUTE__REMOTE_TRACKING_URI", "http://127.0.0.1:5000")
    with pytest.raises(ConfigError, match=r"compute\.remote_tracking_uri http://127\.0\.0\.1:5000 is"):
        check_remote_settings(load_settings(start=project_dir))


def test_a_python_without_the_ec2_extra_is_refused_before_anything_starts(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without paramiko the run would merge, start the GPU and only then fail at the first SSH login."""
    import importlib.util

    from_a_laptop(monkeypatch, tmp_path)
    project = load_settings(start=project_dir)
    check_remote_settings(project)  # this environment has the extra
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "paramiko" else real(name))
    with pytest.raises(ConfigError) as caught:
        check_remote_settings(project)
    assert str(caught.value) == (
        "training on the instance needs paramiko, which this Python lacks; "
        "install the ec2 extra with: pip install 'wms[ec2]'"
    )
