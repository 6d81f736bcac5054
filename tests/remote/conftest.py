"""A real OpenSSH server on loopback standing in for the GPU instance.

The fixture starts Debian's sshd (installed by `make test`, like Chromium) with a host key,
port and authorized key of its own, for the current user. The "instance" is this machine, so
its WMS environment is seeded with the test's own virtual environment (installing torch there
would take minutes); everything else (the wheel, its install by hash, the detached job) is real.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")


@dataclass
class Sshd:
    """The running server and what a client needs."""

    port: int
    user: str
    key: Path
    pid: int
    folder: Path

    def sessions(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def drop_connections(self) -> int:
        """Kill every open connection (not the listener); how many there were."""
        sessions = self.sessions()
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(sessions)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_sshd(folder: Path, *settings: str) -> Iterator[Sshd]:
    """An sshd on a free loopback port with keys of its own in `folder`; `settings` are more
    sshd_config lines (`SetEnv NAME=VALUE`: what every session's environment holds)."""
    if not SSHD.is_file():
        pytest.skip("no OpenSSH server at /usr/sbin/sshd; `make test` installs it (Debian openssh-server)")
    for name, kind in (("host_key", "ed25519"), ("client_key", "ed25519")):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(folder / name)],
            check=True,
            capture_output=True,
        )
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    port = _free_port()
    (folder / "sshd_config").write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {folder / 'host_key'}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                f"PidFile {folder / 'sshd.pid'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "UsePAM no",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                *settings,
            ]
        )
        + "\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # the privilege separation folder sshd wants as root
    log = (folder / "sshd.log").open("w")
    proc = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(folder / "sshd_config")], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {(folder / 'sshd.log').read_text()[-2000:]}")
            time.sleep(0.1)
    try:
        yield Sshd(port=port, user=getpass.getuser(), key=folder / "client_key", pid=proc.pid, folder=folder)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def seeded_remote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The instance's WMS folder with the dependency environment already in place (this venv)."""
    from wms.remote.package import build_wheel

    remote = tmp_path_factory.mktemp("instance") / "wms"
    bundle = build_wheel(tmp_path_factory.mktemp("wheel"))
    (remote / "envs").mkdir(parents=True)
    (remote / "envs" / bundle.deps_key).symlink_to(Path(sys.prefix))
    (remote / "envs" / f"{bundle.deps_key}.ok").touch()
    return remote
