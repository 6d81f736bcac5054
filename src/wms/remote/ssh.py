"""One SSH connection to the training instance, through paramiko.

paramiko rather than asyncssh or fabric: WMS is synchronous code, and paramiko gives exactly
the three things remote training needs with a blocking API: commands (`run`, `stream`),
SFTP (blobs up, progress and results down) and keepalives. fabric adds a task runner on top
that WMS does not use; asyncssh would need an event loop around every call.

Host keys are trusted on first use and pinned after (OpenSSH's `accept-new`): the first
connection writes the instance's key into `compute.ssh_known_hosts` (default
`.wms/known_hosts`); a later connection that meets a different key is refused, with what to
do. The key is pinned under the EC2 instance id where the caller knows it (OpenSSH's
`HostKeyAlias`), else under the address: an instance without an Elastic IP comes back at a
new address after every start, which would otherwise count as a first use each time.
`compute.ssh_key` is a key file, or the key itself (the seed's `EC2_SSH_KEY` secret, passed
as WMS_COMPUTE__SSH_KEY), never written to disk.
"""

from __future__ import annotations

import fcntl
import io
import os
import shlex
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from wms.errors import BackendError, ConfigError

# What a dropped or refused connection raises in paramiko and the socket layer.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, socket.timeout)


@dataclass(frozen=True)
class SshTarget:
    """Where and as whom to log in."""

    host: str
    port: int
    user: str
    key: str  # a path, or the private key itself
    known_hosts: Path
    host_key_alias: str | None = None  # the name its host key is pinned under (the instance id)

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}" + ("" if self.port == 22 else f":{self.port}")

    @property
    def host_name(self) -> str:
        """The address as known_hosts writes it (and paramiko looks it up)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @property
    def pinned_as(self) -> str:
        """The name its host key is pinned under: the alias, else the address."""
        return self.host_key_alias or self.host_name

    def for_instance(self, instance_id: str | None) -> SshTarget:
        """This target with its host key pinned under `instance_id` (None: under the address)."""
        return replace(self, host_key_alias=instance_id or None)

    def command(self, extra: str = "") -> str:
        """The OpenSSH command a person types to log in (the key as a file only)."""
        key = "" if self.key.lstrip().startswith("-----BEGIN") else f"-i {self.key} "
        port = "" if self.port == 22 else f"-p {self.port} "
        return f"ssh {key}{port}{extra}{self.user}@{self.host}"


def _private_key(text: str) -> Any:
    import paramiko

    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text))
        except paramiko.SSHException:
            continue
    raise ConfigError("compute.ssh_key holds text that is not a private key paramiko can read (PEM/OpenSSH)")


class Ssh:
    """A live connection; reconnect by making a new one (`connect`)."""

    def __init__(self, client: Any, target: SshTarget) -> None:
        self.client = client
        self.target = target
        self._sftp: Any = None

    # -- commands ---------------------------------------------------------------------------
    def run(self, command: str, timeout: float = 120) -> tuple[int, str, str]:
        """Run `command` in the login shell; (exit status, stdout, stderr)."""
        _, out, err = self.client.exec_command(command, timeout=timeout)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        return out.channel.recv_exit_status(), stdout, stderr

    def check(self, command: str, what: str, timeout: float = 120) -> str:
        """`run`, raising BackendError with the command's last error line when it fails."""
        code, out, err = self.run(command, timeout)
        if code != 0:
            last = (err.strip() or out.strip() or "no output").splitlines()[-1]
            raise BackendError(f"could not {what} on {self.target.host} (exit {code}): {last}")
        return out

    def stream(self, command: str, on_output: Callable[[bytes], None]) -> int:
        """Run `command`, passing stdout and stderr (merged) on as they come; its exit status."""
        channel = self.client.get_transport().open_session()
        channel.set_combine_stderr(True)
        channel.exec_command(command)
        while True:
            if channel.recv_ready():
                on_output(channel.recv(32768))
            elif channel.exit_status_ready():
                while channel.recv_ready():
                    on_output(channel.recv(32768))
                return int(channel.recv_exit_status())
            else:
                time.sleep(0.05)

    # -- files --------------------------------------------------------------------------------
    @property
    def sftp(self) -> Any:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def put(self, local: Path, remote: str) -> None:
        """Copy a file up, written aside and renamed so a half copy never has the final name."""
        tmp = f"{remote}.part"
        self.sftp.put(str(local), tmp)
        self.sftp.posix_rename(tmp, remote)

    def write_text(self, remote: str, text: str) -> None:
        tmp = f"{remote}.part"
        with self.sftp.open(tmp, "w") as fh:
            fh.write(text)
        self.sftp.posix_rename(tmp, remote)

    def read_text(self, remote: str) -> str | None:
        """A remote file's text, or None when it does not exist."""
        try:
            with self.sftp.open(remote, "r") as fh:
                return bytes(fh.read()).decode()
        except FileNotFoundError:
            return None

    def read_from(self, remote: str, offset: int) -> bytes:
        """The bytes of a remote file from `offset` on (empty when there are none yet)."""
        try:
            with self.sftp.open(remote, "r") as fh:
                fh.seek(offset)
                return bytes(fh.read())
        except FileNotFoundError:
            return b""

    def get(self, remote: str, local: Path) -> None:
        self.sftp.get(remote, str(local))

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()


def connect(target: SshTarget, timeout: float = 15) -> Ssh:
    """Log in once; BackendError (or ConfigError for a bad key or a changed host key) on failure."""
    try:
        import paramiko
    except ImportError:
        raise ConfigError(
            "training on the instance needs paramiko; install it with: pip install 'wms[ec2]'"
        ) from None

    client = paramiko.SSHClient()
    target.known_hosts.parent.mkdir(parents=True, exist_ok=True)
    known = _host_keys(target.known_hosts)
    # paramiko checks the keys it holds for the address; it is given those pinned under the
    # target's name alone, so with an alias the instance's key is required at any address.
    pinned_as = target.pinned_as
    pinned = known.lookup(pinned_as)
    if pinned is None and target.host_key_alias:
        # Pinned under the address alone, as WMS did before it knew instance ids: that key still
        # holds, and is pinned under the instance once it matched.
        pinned_as = target.host_name
        pinned = known.lookup(pinned_as)
    pinned = pinned or {}
    for kind, host_key in pinned.items():
        client.get_host_keys().add(target.host_name, kind, host_key)
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # first use: pinned below
    key = target.key.strip()
    auth: dict[str, Any] = {}
    if key.startswith("-----BEGIN"):
        auth["pkey"] = _private_key(key)
    else:
        path = Path(key).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"no SSH key at {path}: set compute.ssh_key to the instance's private key file "
                "(or to the key itself, e.g. WMS_COMPUTE__SSH_KEY from a secret)"
            )
        auth["key_filename"] = str(path)
    try:
        client.connect(
            target.host,
            port=target.port,
            username=target.user,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
            **auth,
        )
    except paramiko.BadHostKeyException:
        client.close()
        alias = target.host_key_alias
        which = f"instance {alias} (now at {target.host})" if alias else target.host
        raise ConfigError(
            f"the SSH host key of {which} changed since it was pinned in {target.known_hosts}; "
            f"if the instance was rebuilt, remove its line ({pinned_as}) there and connect again"
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise ConfigError(
            f"{target.address} refused the key {target.command()!r}; "
            "check compute.ssh_user and compute.ssh_key"
        ) from None
    except (paramiko.SSHException, *CONNECTION_ERRORS) as exc:
        client.close()
        raise BackendError(f"cannot reach {target.address} over SSH: {exc or type(exc).__name__}") from None
    transport = client.get_transport()
    if (not pinned or pinned_as != target.pinned_as) and transport is not None:
        _pin(target.known_hosts, target.pinned_as, transport.get_remote_server_key())
    if transport is not None:
        transport.set_keepalive(10)  # a dead peer shows as an error within a few keepalives
    return Ssh(client, target)


def _host_keys(path: Path) -> Any:
    """The keys pinned in `path` (none when it does not exist); ConfigError when it cannot be read."""
    import paramiko

    known = paramiko.HostKeys()
    if path.is_file():
        try:
            known.load(str(path))
        except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError):
            raise ConfigError(
                f"{path} holds a line that is no host key (a write cut short?); remove that line "
                "and connect again (a host whose line is removed is pinned again at its next connection)"
            ) from None
    return known


def _pin(path: Path, name: str, key: Any) -> None:
    """Add `name`'s key to `path`, keeping what another connection pinned meanwhile (the file is
    read again under a lock) and whole (written aside and renamed): a write cut short would
    lose every pin, and the next connection to each host would accept any key."""
    with path.with_name(path.name + ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the kernel's: a killed process lets go of it
        known = _host_keys(path)
        if known.lookup(name):
            return  # another connection pinned it first; the next connection checks against it
        known.add(name, key.get_name(), key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            known.save(str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def dropped(exc: BaseException) -> bool:
    """Whether `exc` is a lost connection (worth reconnecting), not a refusal."""
    try:
        import paramiko
    except ImportError:  # pragma: no cover - paramiko is imported before any connection exists
        return isinstance(exc, CONNECTION_ERRORS)
    return isinstance(exc, (*CONNECTION_ERRORS, paramiko.SSHException, BackendError)) and not isinstance(
        exc, ConfigError
    )


@contextmanager
def session(target: SshTarget) -> Iterator[Ssh]:
    """A connection for the length of a block."""
    ssh = connect(target)
    try:
        yield ssh
    finally:
        ssh.close()


def quote(*parts: str) -> str:
    """Shell words for the remote login shell."""
    return " ".join(shlex.quote(p) for p in parts)
