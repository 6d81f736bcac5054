"""A real `wms serve` run the way the chart runs it in its pod, for the chart's and monitoring's tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

# Run before `wms serve` in the server's process: every write Python makes outside $TMPDIR (the
# pod's emptyDir at /tmp) fails as on the pod's read-only root filesystem, and is reported on
# stderr, so that a write the code would swallow still shows.
READ_ONLY_ROOT = """
import errno, os, sys, tempfile
writable = os.path.realpath(tempfile.gettempdir()) + os.sep
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGES = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.truncate", "os.symlink", "os.link",
           "os.chmod", "os.chown", "os.utime"}

def read_only_root(event, args):
    if event == "open":
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & WRITE_FLAGS)
    elif event in CHANGES:
        path, writes = args[0], True
    else:
        return
    if not writes or not isinstance(path, (str, bytes, os.PathLike)):
        return
    path = os.path.realpath(os.fsdecode(path))
    if (path + os.sep).startswith(writable) or path == "/dev/null":
        return
    sys.stderr.write(f"READ-ONLY ROOT: {event} {path}\\n")
    raise OSError(errno.EROFS, "Read-only file system", path)

sys.addaudithook(read_only_root)
import runpy
runpy.run_module("wms", run_name="__main__")
"""


@dataclass
class Pod:
    """`wms serve` in a subprocess: its URL, and what it wrote to stderr so far."""

    url: str
    log: Path

    def refused_writes(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.startswith("READ-ONLY ROOT")]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def pod(exported_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    """`wms serve` as the chart's Deployment starts it: the ConfigMap's WMS_SERVE__* settings, the
    image's PYTHONDONTWRITEBYTECODE, a read-only root apart from $TMPDIR, and a HOME it cannot write
    (ONNX Runtime tries to keep a telemetry id under ~/.cache, and has to do without)."""
    root = tmp_path_factory.mktemp("pod")
    (root / "app").mkdir()  # the image's WORKDIR
    (root / "tmp").mkdir()  # the emptyDir
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WMS_")},
        "HOME": "/dev/null",
        "TMPDIR": str(root / "tmp"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "WMS_SERVE__HOST": "127.0.0.1",
        "WMS_SERVE__PORT": str(port),
        "WMS_SERVE__MODEL": str(exported_model),
        "WMS_SERVE__MAX_CONCURRENCY": "2",
        "WMS_SERVE__INTRA_OP_THREADS": "1",
        "WMS_SERVE__MAX_UPLOAD_MB": "20",
        "WMS_SERVE__MAX_PIXELS": "40000000",
    }
    log = root / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", READ_ONLY_ROOT, "serve"],
            cwd=root / "app",
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"wms serve did not get ready: {log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield Pod(url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
