"""The local deploy: a new version is checked before the stable port switches, and clients never notice."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from wms.config import load_settings
from wms.deploy import make_deployer
from wms.deploy.base import agreement, reference_photo
from wms.deploy.local import LocalDeployer, alive, free_port, terminate
from wms.errors import BackendError


@pytest.fixture
def deploy_project(served_project: Path) -> Iterator[Path]:
    """The served project with its stable port on a free loopback port; stops what it started."""
    with (served_project / "wms.toml").open("a") as fh:
        fh.write(f"\n[serve]\nport = {free_port()}\n\n[deploy]\nready_timeout_seconds = 90\n")
    try:
        yield served_project
    finally:
        LocalDeployer(load_settings(start=served_project), lambda _: None).stop()


def _deployer(root: Path, lines: list[str] | None = None) -> LocalDeployer:
    deployer = make_deployer(load_settings(start=root), (lines if lines is not None else []).append)
    assert isinstance(deployer, LocalDeployer)
    return deployer


class Poller:
    """A client asking the stable port for masks as fast as it can, recording every answer."""

    def __init__(self, url: str, photo: bytes) -> None:
        self.url, self.photo = url, photo
        self.versions: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    answer = client.post(f"{self.url}/predict", files={"file": ("p.png", self.photo)})
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if answer.status_code != 200:
                    self.failures.append(f"{answer.status_code} {answer.text}")
                else:
                    self.versions.append(answer.headers["x-model-version"])

    def wait_for(self, answers: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.versions) < answers and not self.failures:
            assert time.monotonic() < deadline, f"only {len(self.versions)} answers"
            time.sleep(0.01)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def test_a_redeploy_under_load_loses_no_request(
    deploy_project: Path, exported_model: Path, register_model: Callable[..., str], cli: Callable[..., Any]
) -> None:
    lines: list[str] = []
    first = _deployer(deploy_project, lines).deploy("production")
    assert first.version == "1" and "smoke mask agreement 100.00%" in first.summary
    assert any("switched" in line for line in lines)
    url = first.url
    assert httpx.get(f"{url}/ready").json()["version"] == "1"
    state = json.loads((deploy_project / ".wms/deploy/local.json").read_text())
    old_pid = state["server"]["pid"]
    assert alive(old_pid) and alive(state["proxy"]["pid"])

    photo, _ = reference_photo(load_settings(start=deploy_project))
    register_model(deploy_project, exported_model)  # version 2, now production
    with Poller(url, photo) as poller:
        poller.wait_for(3)
        second = _deployer(deploy_project).deploy("production")
        poller.wait_for(len(poller.versions) + 3)
    assert second.version == "2"
    assert poller.failures == []
    assert poller.versions[0] == "1" and poller.versions[-1] == "2"
    assert not alive(old_pid)
    assert httpx.get(f"{url}/model").json()["version"] == "2"
    # Only the served version's files stay: every promotion's would otherwise pile up here.
    assert sorted(p.name for p in (deploy_project / ".wms/deploy/models").iterdir()) == ["v2"]

    result = cli("deploy", "stop")
    assert result.exit_code == 0 and "stopped model 2" in result.output
    assert not alive(state["proxy"]["pid"])
    assert not (deploy_project / ".wms/deploy/local.json").exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/health", timeout=2)


def test_a_version_that_fails_the_smoke_check_never_takes_traffic(
    deploy_project: Path,
    exported_model: Path,
    register_model: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = _deployer(deploy_project).deploy("production")
    before = json.loads((deploy_project / ".wms/deploy/local.json").read_text())
    register_model(deploy_project, exported_model)

    # The new server answers, but not with the mask its model should give.
    import wms.deploy.local as local

    real = local.expected_mask
    monkeypatch.setattr(local, "expected_mask", lambda model, photo: ~real(model, photo))
    started: list[Any] = []
    spawn = LocalDeployer._start_server
    monkeypatch.setattr(
        LocalDeployer, "_start_server", lambda self, *a: started.append(spawn(self, *a)) or started[-1]
    )
    lines: list[str] = []
    with pytest.raises(BackendError, match=r"smoke check failed .* nothing was switched"):
        _deployer(deploy_project, lines).deploy("production")
    assert f"left model 1 at {first.url} serving; stopped the new server for model 2" in lines[-1]
    assert httpx.get(f"{first.url}/ready").json()["version"] == "1"
    assert json.loads((deploy_project / ".wms/deploy/local.json").read_text()) == before
    assert started and started[0].poll() is not None  # the rejected server was stopped
    assert alive(before["server"]["pid"])


def test_a_stable_port_another_program_holds_is_named_and_nothing_is_left_running(
    deploy_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said "left the running version serving", of a version no deploy had started."""
    serve = load_settings(start=deploy_project).settings.serve
    started: list[Any] = []
    spawn = LocalDeployer._start_server
    monkeypatch.setattr(
        LocalDeployer, "_start_server", lambda self, *a: started.append(spawn(self, *a)) or started[-1]
    )
    lines: list[str] = []
    with socket.socket() as other:  # another program on the stable port
        other.bind((serve.host, serve.port))
        other.listen()
        with pytest.raises(BackendError, match=r"is taken by another program; stop it or set serve.port"):
            _deployer(deploy_project, lines).deploy("production")
    assert lines[-1] == "no earlier deploy serves here; stopped the new server for model 1"
    assert not (deploy_project / ".wms/deploy/local.json").exists()
    assert started and started[0].wait(timeout=15) is not None  # the new server was stopped (or killed)


def test_the_smoke_photo_is_never_kept_for_labelling_but_a_users_photo_is(
    deploy_project: Path, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    toml = deploy_project / "wms.toml"
    keep_all = f'[serve]\ncapture = "sample"\ncapture_sample_rate = 1.0\ncapture_dir = "{inbox.as_posix()}"\n'
    toml.write_text(toml.read_text().replace("[serve]\n", keep_all, 1))
    result = _deployer(deploy_project).deploy("production")
    assert not inbox.exists()  # every deploy's smoke photo would be first in line for labelling

    users = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(users, "PNG")
    assert httpx.post(f"{result.url}/predict", files={"file": ("u.png", users.getvalue())}).status_code == 200
    deadline = time.monotonic() + 30  # kept after the answer is sent
    while not list(inbox.glob("meta/*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(inbox.glob("meta/*.json"))) == 1


@pytest.mark.parametrize(
    "recorded",
    ["[]", '"x"', "7", '{"server": "12", "proxy": [1]}', '{"server": {"pid": "12"}, "proxy": {"pid": true}}'],
)
def test_a_deploy_record_edited_by_hand_stops_nothing_and_raises_nothing(
    served_project: Path, cli: Callable[..., Any], recorded: str
) -> None:
    state = served_project / ".wms" / "deploy" / "local.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(recorded)
    result = cli("deploy", "stop")
    assert result.exit_code == 0, result.output
    assert "no local deployment is running" in result.output


def test_dry_run_prints_the_plan_and_starts_nothing(served_project: Path, cli: Callable[..., Any]) -> None:
    result = cli("deploy", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "fetch model production (version 1, sha256 " in result.output
    assert "smoke-predict" in result.output and "switch the proxy" in result.output
    assert not (served_project / ".wms/deploy").exists()


@pytest.mark.parametrize("model", ["7", "staging"])
def test_dry_run_of_a_model_the_registry_lacks_says_so(
    served_project: Path, cli: Callable[..., Any], model: str
) -> None:
    result = cli("deploy", "--dry-run", "--model", model)
    assert result.exit_code == 2
    assert result.output.startswith(f"error: no model '{model}' in 'wms-segmenter' (versions: 1)")
    assert "plan for deploying" not in result.output
    assert not (served_project / ".wms/deploy").exists()


def test_agreement_counts_equal_pixels() -> None:
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, "PNG")
    assert agreement(buffer.getvalue(), mask) == 1.0
    assert agreement(buffer.getvalue(), ~mask) == 0.0
    assert agreement(b"not a png", mask) == 0.0


def test_a_server_just_started_counts_as_alive() -> None:
    """Just after exec /proc/PID/cmdline reads empty for a moment; that is not a dead server."""
    for _ in range(300):  # the window is short: about 3 starts in 100 read empty
        server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "wms"])
        try:
            assert alive(server.pid)
        finally:
            server.kill()
            server.wait()
    assert not alive(server.pid)


def test_a_server_that_ignores_sigterm_is_gone_and_its_port_free_once_terminate_returns() -> None:
    """A failed deploy stops its new server before it says so; a second deploy (or test) must not
    find that server's port taken, nor a zombie left behind."""
    port = free_port()
    code = (
        "import signal, socket, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); "
        "print('up', flush=True); time.sleep(60)"
    )
    server = subprocess.Popen([sys.executable, "-c", code, "wms"], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline() == "up\n"
    terminate(server.pid, grace=0.2)
    with pytest.raises(ChildProcessError):  # reaped by terminate: no zombie is left
        os.waitpid(server.pid, os.WNOHANG)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free again


def test_two_deploys_at_once_leave_one_server_and_stop_ends_both(
    deploy_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each deploy is held before it takes the stable port until the other one has got as far,
    # or is waiting for it: the moment `wms deploy` and a pipeline's deploy stage would collide.
    started: list[subprocess.Popen[bytes]] = []
    at_proxy: list[str] = []
    lines: list[str] = []
    spawn, ensure = LocalDeployer._start_server, LocalDeployer._ensure_proxy

    def start_server(self: LocalDeployer, *args: Any) -> subprocess.Popen[bytes]:
        started.append(spawn(self, *args))
        return started[-1]

    def ensure_proxy(self: LocalDeployer, state: dict[str, Any]) -> int:
        at_proxy.append(threading.current_thread().name)
        deadline = time.monotonic() + 120
        while len(at_proxy) < 2 and not any("waiting for another" in line for line in lines):
            assert time.monotonic() < deadline, "the other deploy neither came nor waited"
            time.sleep(0.01)
        return ensure(self, state)

    monkeypatch.setattr(LocalDeployer, "_start_server", start_server)
    monkeypatch.setattr(LocalDeployer, "_ensure_proxy", ensure_proxy)
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(_deployer(deploy_project, lines).deploy()))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert [r.version for r in results] == ["1", "1"]
    state = json.loads((deploy_project / ".wms/deploy/local.json").read_text())
    assert httpx.get(f"{state['url']}/ready").json()["version"] == "1"
    assert [p.pid for p in started if p.poll() is None] == [state["server"]["pid"]]

    _deployer(deploy_project).stop()
    assert all(p.poll() is not None for p in started)
    assert not alive(state["proxy"]["pid"])


def test_a_deploy_stopped_after_starting_the_proxy_leaves_nothing_in_the_way(
    deploy_project: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable[..., Any]
) -> None:
    def interrupted(self: LocalDeployer, url: str, version: str) -> None:
        raise KeyboardInterrupt  # Ctrl-C (or a kill) after the proxy started, before it was recorded

    monkeypatch.setattr(LocalDeployer, "_switch", interrupted)
    result = cli("deploy")
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines()[-1] == (
        "interrupted (SIGINT): deploy stopped before the switch: what served before (if anything) still "
        "serves and the new server was stopped; run `wms deploy` again, or `wms deploy stop` to stop it all"
    )
    assert not (deploy_project / ".wms/deploy/local.json").exists()
    monkeypatch.undo()
    monkeypatch.chdir(deploy_project)
    deployer = _deployer(deploy_project)
    assert httpx.get(f"{deployer.stable_url}/_proxy").json()["proxy"] is True  # still on the port

    assert deployer.stop() == f"stopped the proxy on {deployer.stable_url}, which no deployment had recorded"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{deployer.stable_url}/_proxy", timeout=2)

    monkeypatch.setattr(LocalDeployer, "_switch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _deployer(deploy_project).deploy()
    monkeypatch.undo()
    result = _deployer(deploy_project).deploy()  # the proxy left running is taken, not in the way
    assert httpx.get(f"{result.url}/ready").json()["version"] == "1"
