"""Host keys pinned for the instance: a real sshd on loopback is the instance, moto's EC2 starts/stops it.

The sshd listens on 127.0.0.1, which `localhost` also reaches: the same instance at a new
address, as an instance without an Elastic IP comes back after every start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from tests.conftest import TINY_SETTINGS, Ec2Box
from tests.remote.conftest import Sshd

from wms.errors import ConfigError
from wms.remote.ssh import SshTarget, connect


def another_key(folder: Path) -> str:
    """The public part of a new host key, as a known_hosts line carries it ("TYPE BASE64")."""
    path = folder / "another_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def test_a_host_key_pinned_for_an_instance_is_required_at_any_address(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    first = SshTarget("127.0.0.1", sshd.port, sshd.user, str(sshd.key), known).for_instance("i-0abc")
    connect(first).close()
    assert known.read_text().split()[0] == "i-0abc"  # pinned for the instance, not its address
    moved = replace(first, host="localhost")
    ssh = connect(moved)  # the same key at the new address
    try:
        assert ssh.run("echo here")[:2] == (0, "here\n")
    finally:
        ssh.close()
    known.write_text(f"i-0abc {another_key(tmp_path)}\n")  # as if someone else answered there
    with pytest.raises(ConfigError) as refused:
        connect(moved)
    assert str(refused.value).startswith("the SSH host key of instance i-0abc (now at localhost) changed")
    assert "\n" not in str(refused.value)


def test_a_key_an_older_wms_pinned_under_the_address_still_holds_for_the_instance(
    sshd: Sshd, tmp_path: Path
) -> None:
    """known_hosts from before keys were pinned under the instance id names the address alone."""
    known = tmp_path / "known_hosts"
    by_address = SshTarget("127.0.0.1", sshd.port, sshd.user, str(sshd.key), known)
    connect(by_address).close()  # pinned as [127.0.0.1]:PORT, as the older wms did
    real = known.read_text()
    known.write_text(f"[127.0.0.1]:{sshd.port} {another_key(tmp_path)}\n")  # someone else answered there
    with pytest.raises(ConfigError) as refused:
        connect(by_address.for_instance("i-0abc"))
    assert f"remove its line ([127.0.0.1]:{sshd.port})" in str(refused.value)
    assert "i-0abc" not in known.read_text()  # nothing pinned for the instance from that answer
    known.write_text(real)
    connect(by_address.for_instance("i-0abc")).close()
    names = [line.split()[0] for line in known.read_text().splitlines()]
    assert names == [f"[127.0.0.1]:{sshd.port}", "i-0abc"]


def test_compute_exec_refuses_the_instance_at_a_new_address_with_another_key(
    sshd: Sshd, ec2_box: Ec2Box, tmp_path: Path
) -> None:
    (tmp_path / "wms.toml").write_text(TINY_SETTINGS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WMS_")} | {
        "WMS_COMPUTE__BACKEND": "ec2",
        "WMS_COMPUTE__INSTANCE_ID": ec2_box.id,
        "WMS_COMPUTE__POLL_SECONDS": "0.05",
        "WMS_COMPUTE__READY_PROBE": "tcp",
        "WMS_COMPUTE__SSH_PORT": str(sshd.port),
        "WMS_COMPUTE__SSH_USER": sshd.user,
        "WMS_COMPUTE__SSH_KEY": str(sshd.key),
    }

    def wms(host: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "wms", "compute", *args]
        where = env | {"WMS_COMPUTE__HOST": host}
        return subprocess.run(cmd, cwd=tmp_path, env=where, capture_output=True, text=True, timeout=120)

    def exec_at(host: str, *stop: str) -> subprocess.CompletedProcess[str]:
        return wms(host, "exec", *stop, "--", "echo", "ran")

    # Started again at a new address: the same key is accepted.
    for done in (exec_at("127.0.0.1", "--stop"), exec_at("localhost")):
        assert (done.returncode, done.stdout) == (0, "ran\n"), done.stderr
    printed = wms("localhost", "ssh", "--print")  # OpenSSH looks the key up where WMS pinned it
    assert f"-o HostKeyAlias={ec2_box.id} " in printed.stdout, printed.stderr
    known = tmp_path / ".wms" / "known_hosts"
    known.write_text(f"{ec2_box.id} {another_key(tmp_path)}\n")  # the instance's pinned key is another
    refused = exec_at("localhost", "--stop")
    assert refused.returncode == 2 and refused.stdout == ""  # the command never ran
    lines = [line for line in refused.stderr.splitlines() if "host key" in line]
    assert len(lines) == 1 and f"host key of instance {ec2_box.id} (now at localhost) changed" in lines[0]
    assert ec2_box.state() == "stopped"


def test_two_first_connections_at_once_keep_both_pins(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import paramiko

    known = tmp_path / "known_hosts"
    first, second = (
        SshTarget("127.0.0.1", sshd.port, sshd.user, str(sshd.key), known).for_instance(name)
        for name in ("i-0first", "i-0second")
    )
    # The first connection is held after its login until the second has pinned its key.
    second_done = threading.Event()
    server_key = paramiko.Transport.get_remote_server_key

    def held(transport: paramiko.Transport) -> paramiko.PKey:
        if threading.current_thread().name == "first":
            assert second_done.wait(timeout=60)
        return server_key(transport)

    monkeypatch.setattr(paramiko.Transport, "get_remote_server_key", held)
    failures: list[BaseException] = []

    def log_in(target: SshTarget, done: threading.Event | None) -> None:
        try:
            connect(target).close()
        except BaseException as exc:
            failures.append(exc)
        if done is not None:
            done.set()

    threads = [
        threading.Thread(target=log_in, args=(first, None), name="first"),
        threading.Thread(target=log_in, args=(second, second_done), name="second"),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    assert sorted(line.split()[0] for line in known.read_text().splitlines()) == ["i-0first", "i-0second"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_known_hosts_file_cut_short_is_one_line_naming_it(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    target = SshTarget("127.0.0.1", sshd.port, sshd.user, str(sshd.key), known)
    connect(target.for_instance("i-0first")).close()
    whole = known.read_text()
    known.write_text(whole + whole.replace("i-0first", "i-0second")[:40])  # a second pin cut short
    with pytest.raises(ConfigError) as refused:
        connect(target.for_instance("i-0first"))
    assert str(refused.value).startswith(f"{known} holds a line that is no host key")
    assert "remove that line" in str(refused.value) and "\n" not in str(refused.value)
