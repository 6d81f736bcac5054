"""Readiness probes: what must answer before a started machine is ready to train.

    compute.ready_probe = "none" | "tcp" | "http" | "runner"

`tcp` waits for the SSH port, `http` for MLflow's `/health`, `runner` for the GitHub
self-hosted runner to be online (asked through a `RunnerProbe` from the git host layer).
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from wms.compute.base import RunnerProbeSource
from wms.config import ComputeSettings
from wms.errors import ConfigError

Probe = Callable[[str], bool]  # host -> answered

# What a start that waited in vain says: the instance runs, and its boot (wms-bootstrap.service)
# sets up what the probe asks for, fetching its scripts from the bucket first.
BOOT_HINT = (
    "the instance runs but its service does not answer; see how its boot went with "
    "`wms compute ssh` and `journalctl -u wms-bootstrap` there"
)


def tcp_open(host: str, port: int, timeout: float = 3.0) -> bool:
    """Whether something accepts a TCP connection at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def server_answers(url: str, tries: int = 3, pause: float = 2.0) -> bool:
    """Whether the server of an http(s) `url` accepts connections, asking `tries` times."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for attempt in range(tries):
        if attempt:
            time.sleep(pause)
        if tcp_open(parts.hostname or "", port):
            return True
    return False


def http_ok(url: str, timeout: float = 3.0) -> bool:
    """Whether `url` answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (OSError, urllib.error.URLError, ValueError):
        return False


def mlflow_url(cfg: ComputeSettings, host: str) -> str:
    """The MLflow server on the instance."""
    return f"http://{host}:{cfg.mlflow_port}"


def make_probe(
    cfg: ComputeSettings, runner_probe: RunnerProbeSource | None = None
) -> tuple[str, Probe] | None:
    """The configured probe as (description, host -> answered), or None for `none`.

    `runner_probe` may be a function that builds the runner probe; it is called only for `runner`.
    """
    kind = cfg.ready_probe
    if kind == "none":
        return None
    if kind == "tcp":
        return f"TCP port {cfg.ssh_port} (SSH)", lambda host: tcp_open(host, cfg.ssh_port)
    if kind == "http":
        return "MLflow /health", lambda host: http_ok(mlflow_url(cfg, host) + "/health")
    if callable(runner_probe):
        runner_probe = runner_probe()
    if runner_probe is None:
        raise ConfigError(
            'compute.ready_probe = "runner" needs a git host that can see self-hosted runners '
            '(GitHub); set git.host accordingly or use compute.ready_probe = "tcp"'
        )
    probe = runner_probe
    return f"self-hosted runner {cfg.runner_name!r} online", lambda _host: probe.is_online(cfg.runner_name)
