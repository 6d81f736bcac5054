"""The local deploy target: `wms serve` processes behind a proxy that owns the stable port.

    wms deploy            # start the new version on a free port, check it, switch serve.port to it
    wms deploy stop       # stop the server and the proxy

A deploy never touches the running version until the new one has answered /ready and given
the expected mask for the reference photo; then the proxy's upstream file is replaced
atomically, the proxy confirms it, and only then is the old server stopped (it drains its
in-flight requests first). The running deployment is recorded in `.wms/deploy/local.json`.
One deploy or stop at a time on a checkout: a second one waits for the first (`deploy.lock`).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from wms.config import Project
from wms.deploy.base import (
    SMOKE_PARAMS,
    DeployResult,
    Echo,
    agreement,
    check_agreement,
    expected_mask,
    forget_other_models,
    open_registry,
    planned_card,
    reference_photo,
    stage_model,
)
from wms.deploy.proxy import body_limit_mb, write_upstream
from wms.errors import BackendError
from wms.files import write_text_atomic

if TYPE_CHECKING:
    from wms.registry import Registry

STATE_FILE, UPSTREAM_FILE, LOCK_FILE = "local.json", "upstream.json", "deploy.lock"
KILL_WAIT_SECONDS = 5.0  # a killed server's end, before its port counts as free


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def alive(pid: int | None) -> bool:
    """Whether `pid` is a running process started from this package (guards against pid reuse)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():  # no /proc (macOS): the signal above is all we can check
        return True
    try:
        if "zombie" in (proc / "status").read_text():  # exited, not yet reaped
            return False
        return b"wms" in _cmdline(proc)
    except OSError:  # it exited meanwhile
        return False


def _cmdline(proc: Path, settle: float = 1.0) -> bytes:
    """The process's command line; it reads empty for a moment while the process is in exec."""
    deadline = time.monotonic() + settle
    while not (text := (proc / "cmdline").read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return text


def terminate(pid: int | None, grace: float = 30.0) -> None:
    """SIGTERM (uvicorn drains in-flight requests), then SIGKILL after `grace` seconds; returns
    once the process is gone, so that its port is free again."""
    if not alive(pid):
        return
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    if _gone(pid, grace):
        return
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _gone(pid, KILL_WAIT_SECONDS)


def _gone(pid: int, seconds: float) -> bool:
    """Wait up to `seconds` for `pid` to end, reaping it where it is our own child."""
    deadline = time.monotonic() + seconds
    while True:
        ended = not alive(pid)  # a child of ours that ended is a zombie until it is reaped
        with suppress(ChildProcessError):  # started by an earlier `wms deploy`: not ours to reap
            if os.waitpid(pid, os.WNOHANG)[0]:
                return True
        if ended:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


class LocalDeployer:
    """Deploys to processes on this machine; the default target."""

    name = "local"

    def __init__(self, project: Project, echo: Echo, registry: Registry | None = None) -> None:
        self.project, self.echo, self._registry = project, echo, registry
        self.cfg, self.serve = project.settings.deploy, project.settings.serve
        self.dir = project.state_dir / "deploy"
        self.state_file, self.upstream_file = self.dir / STATE_FILE, self.dir / UPSTREAM_FILE

    @property
    def stable_url(self) -> str:
        return self.serve.url

    def plan(self, model_ref: str = "production") -> list[str]:
        card = planned_card(self.project, self._registry, model_ref)
        return [
            f"fetch model {model_ref} (version {card.version}, sha256 {card.onnx_sha256[:12]}…) from the "
            f"registry into {self.dir}/models and check its sha256",
            "start `wms serve` with it on a free loopback port; wait for /ready "
            f"(up to {self.cfg.ready_timeout_seconds:g} s)",
            "smoke-predict the reference photo and compare with the model's own mask "
            f"(at least {self.cfg.min_agreement:.0%} of pixels)",
            f"switch the proxy on {self.stable_url} to the new server (atomic upstream file)",
            "stop the old server after it has drained its requests; record the deployment in "
            f"{self.state_file}",
        ]

    # -- state ---------------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any]:
        """What the last deploy recorded; a part that is not as it writes it (a hand edit) is left
        out, so that nothing is stopped by a pid that is not one."""
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(state, dict):
            return {}
        for part in ("server", "proxy"):
            pid = state[part].get("pid") if isinstance(state.get(part), dict) else None
            if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
                state.pop(part, None)
        return state

    def serving(self) -> str | None:
        """'model V at URL' while the server an earlier deploy started still runs; else None."""
        state = self.read_state()
        if not alive(state.get("server", {}).get("pid")):
            return None
        return f"model {state.get('version')} at {state.get('url')}"

    def _write_state(self, state: dict[str, Any]) -> None:
        write_text_atomic(self.state_file, json.dumps(state, indent=2) + "\n")

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold this checkout's deploy lock: two deploys at once (`wms deploy` beside a pipeline's
        deploy stage) would each take the other's server for none of theirs and leave it running.
        The lock is the kernel's (flock), so a deploy that is killed lets go of it at once."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / LOCK_FILE).open("a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.echo("waiting for another `wms deploy` (or deploy stop) on this checkout to finish")
                fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    # -- processes -----------------------------------------------------------------------------
    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        logs = self.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / log_name).open("ab") as log:
            return subprocess.Popen(
                args,
                cwd=self.project.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `wms deploy`, and Ctrl-C in its terminal
            )

    def _start_server(self, model_dir: Path, port: int, version: str) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "wms"]
        if self.project.config_file is not None:
            args += ["--config", str(self.project.config_file)]
        for key, value in self.serve.model_dump().items():
            if key not in ("host", "port", "model"):
                args += ["--set", f"serve.{key}={json.dumps(value)}"]
        args += ["serve", "--host", "127.0.0.1", "--port", str(port), "--model", str(model_dir)]
        return self._spawn(args, f"serve-v{version}-{port}.log")

    def _wait_ready(self, proc: subprocess.Popen[bytes], url: str, version: str) -> None:
        deadline = time.monotonic() + self.cfg.ready_timeout_seconds
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = self.dir / "logs" / f"serve-v{version}-{url.rsplit(':', 1)[1]}.log"
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
                raise BackendError(
                    f"the new server for model {version} exited with code {proc.returncode}"
                    f"{': ' + tail[0] if tail else ''} (log: {log})"
                )
            try:
                answer = httpx.get(f"{url}/ready", timeout=2)
                if answer.status_code == 200 and answer.json().get("version") == version:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise BackendError(
            f"the new server for model {version} was not ready within {self.cfg.ready_timeout_seconds:g} s "
            "(deploy.ready_timeout_seconds); see its log in .wms/deploy/logs"
        )

    def _proxy_answers(self) -> dict[str, Any] | None:
        try:
            answer = httpx.get(f"{self.stable_url}/_proxy", timeout=2)
            body = answer.json()
        except (httpx.HTTPError, ValueError):
            return None
        return body if isinstance(body, dict) and body.get("proxy") else None

    def _running_proxy(self) -> int | None:
        """The pid of the proxy on the stable port that reads this checkout's upstream file, also
        where no deployment recorded it: a deploy stopped (Ctrl-C, killed) after starting it."""
        answer = self._proxy_answers()
        if answer is None or answer.get("upstream_file") != str(self.upstream_file.resolve()):
            return None
        pid = answer.get("pid")
        return pid if isinstance(pid, int) and alive(pid) else None

    def _ensure_proxy(self, state: dict[str, Any]) -> int:
        pid = state.get("proxy", {}).get("pid")
        if alive(pid) and self._proxy_answers() is not None:
            return int(pid)
        if (running := self._running_proxy()) is not None:
            return running
        with socket.socket() as probe:
            if probe.connect_ex((self.serve.host, self.serve.port)) == 0:
                raise BackendError(
                    f"port {self.serve.port} on {self.serve.host} is taken by another program; stop it or "
                    "set serve.port to a free port"
                )
        proc = self._spawn(
            [
                sys.executable, "-m", "wms.deploy.proxy", "--host", self.serve.host,
                "--port", str(self.serve.port), "--upstream-file", str(self.upstream_file),
                "--header-timeout", str(self.serve.header_timeout_seconds),
                "--upload-timeout", str(self.serve.upload_timeout_seconds),
                "--max-body-mb", str(body_limit_mb(self.serve.max_upload_mb)),
            ],
            "proxy.log",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while self._proxy_answers() is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                terminate(proc.pid, grace=2)
                raise BackendError(
                    f"the proxy on {self.stable_url} did not start; see {self.dir}/logs/proxy.log"
                )
            time.sleep(0.05)
        return proc.pid

    def _switch(self, url: str, version: str) -> None:
        write_upstream(self.upstream_file, url, version)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            answer = self._proxy_answers()
            if answer is not None and answer.get("url") == url:
                return
            time.sleep(0.02)
        raise BackendError(f"the proxy on {self.stable_url} did not take the new upstream {url}")

    # -- the verbs -----------------------------------------------------------------------------
    def deploy(self, model_ref: str = "production") -> DeployResult:
        """Start `model_ref` beside the running version, check it, switch the stable port to it."""
        with self._exclusive():
            return self._deploy(model_ref)

    def _deploy(self, model_ref: str) -> DeployResult:
        steps: list[str] = []

        def step(line: str) -> None:
            steps.append(line)
            self.echo(f"[{len(steps)}/5] {line}")

        registry = open_registry(self.project, self._registry)
        model = stage_model(registry, model_ref, self.dir / "models")
        version = model.version
        step(
            f"model {model_ref} is version {version}; fetched, sha256 {model.card.onnx_sha256[:12]}… verified"
        )
        photo, photo_name = reference_photo(self.project)
        expected = expected_mask(model, photo)

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = self._start_server(self.dir / "models" / f"v{version}", port, version)
        try:
            self._wait_ready(proc, url, version)
            step(f"started the new server (pid {proc.pid}) on {url}; /ready says version {version}")
            try:
                answer = httpx.post(
                    f"{url}/predict", params=SMOKE_PARAMS, files={"file": (photo_name, photo)}, timeout=60
                )
            except httpx.HTTPError as exc:
                raise BackendError(f"smoke request to the new server failed: {exc}") from None
            score = agreement(answer.content, expected) if answer.status_code == 200 else 0.0
            check_agreement(score, self.cfg.min_agreement, url)
            step(f"smoke check: mask for {photo_name} agrees with the expected one on {score:.2%} of pixels")
            state = self.read_state()
            proxy_pid = self._ensure_proxy(state)
            self._switch(url, version)
        except BaseException:
            terminate(proc.pid, grace=5)
            before = self.serving()
            kept = f"left {before} serving" if before else "no earlier deploy serves here"
            self.echo(f"{kept}; stopped the new server for model {version}")
            raise
        old = state.get("server", {})
        step(f"switched {self.stable_url} to model {version} (proxy pid {proxy_pid})")
        self._write_state(
            {
                "url": self.stable_url,
                "version": version,
                "proxy": {"pid": proxy_pid, "port": self.serve.port},
                "server": {
                    "pid": proc.pid,
                    "port": port,
                    "version": version,
                },
                "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        if old.get("pid") and old.get("pid") != proc.pid:
            terminate(old["pid"])
            step(f"stopped the old server (model {old.get('version')}, pid {old['pid']})")
        else:
            step("no older server to stop")
        forget_other_models(self.dir / "models", version)  # no server reads them now
        return DeployResult(
            target=self.name,
            version=version,
            url=self.stable_url,
            agreement=score,
            steps=steps,
            details={"port": str(self.serve.port)},
        )

    def stop(self) -> str:
        """Stop the server and the proxy this target started; forget the deployment."""
        with self._exclusive():
            return self._stop()

    def _stop(self) -> str:
        state = self.read_state()
        proxy = self._running_proxy() if not alive(state.get("proxy", {}).get("pid")) else None
        if not state and proxy is None:
            return "no local deployment is running"
        terminate(state.get("server", {}).get("pid"))
        terminate(proxy or state.get("proxy", {}).get("pid"), grace=5)
        self.state_file.unlink(missing_ok=True)
        self.upstream_file.unlink(missing_ok=True)
        if not state:
            return f"stopped the proxy on {self.stable_url}, which no deployment had recorded"
        return f"stopped model {state.get('version')} and the proxy on {state.get('url')}"
