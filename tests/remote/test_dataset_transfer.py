"""What a job on the instance trains on: a store version it reads from S3 itself, or a folder's files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from wms.config import load_settings
from wms.remote.ssh import SshTarget
from wms.remote.trainer import RemoteTrainer
from wms.runs import UNVERSIONED


class RecordingSsh:
    """The two calls sending a dataset makes: list the blobs there, copy a file."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def check(self, command: str, what: str) -> str:
        return ""  # no blob is there yet

    def put(self, local: Path, remote: str) -> None:
        self.sent.append(local.name)


def test_wms_train_on_a_folder_sends_its_files_even_with_an_s3_store(
    project_dir: Path, make_batch: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`wms train DIR` has no store version: the instance cannot read it from S3."""
    monkeypatch.setenv("WMS_STORE__URL", "s3://wms-data/store")
    trainer = RemoteTrainer(
        load_settings(start=project_dir),
        SshTarget("127.0.0.1", 22, "ubuntu", "key", project_dir / "known_hosts"),
    )
    folder, ssh = make_batch(count=6), RecordingSsh()
    spec = trainer._send_dataset(ssh, "/srv/wms", folder, UNVERSIONED)  # type: ignore[arg-type]
    assert spec["kind"] == "files" and len(spec["files"]) == 12 and len(ssh.sent) == 12
    stored = trainer._send_dataset(ssh, "/srv/wms", folder, "0123456789ab")  # type: ignore[arg-type]
    assert stored == {"kind": "store", "url": "s3://wms-data/store", "version": "0123456789ab"}
