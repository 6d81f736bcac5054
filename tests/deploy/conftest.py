"""What the deploy tests share: a real `wms serve` run the way the chart runs it in its pod (the
chart's and monitoring's tests), and a fake Kubernetes API server (the k8s target's and the
kubeconfig's tests)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import _free_port, wait_until_ready

from wms.config import ServeSettings
from wms.serve.app import create_app
from wms.serve.model import ModelCard, load_folder

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
        "WMS_SERVE__MAX_QUEUE": "8",
        "WMS_SERVE__INTRA_OP_THREADS": "1",
        "WMS_SERVE__MAX_UPLOAD_MB": "20",
        "WMS_SERVE__UPLOAD_TIMEOUT_SECONDS": "180",
        "WMS_SERVE__HEADER_TIMEOUT_SECONDS": "2",  # the chart's 10, shortened for the test that waits for it
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
    try:
        wait_until_ready(f"{url}/ready", proc, log, "wms serve", seconds=90)
        yield Pod(url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


TOKEN = "fake-token"
OLD_NAMESPACES = {
    "model-7": "2026-01-01T00:00:00Z",
    "model-9": "2026-02-01T00:00:00Z",  # newer than model-8 although its number is larger: time decides
    "model-8": "2026-03-01T00:00:00Z",
    "kube-system": "2025-12-01T00:00:00Z",
    "default": "2025-12-01T00:00:00Z",
}


class FakeCluster:
    """A Kubernetes API on loopback that records every call and keeps namespaces and secrets.

    It answers only requests with the bearer TOKEN or, over TLS (`tls`, a server context that
    asks for client certificates), a client certificate that its CA verified.
    """

    def __init__(self, log: Path, state: Path, upstream: str, tls: ssl.SSLContext | None = None) -> None:
        self.log, self.state, self.upstream = log, state, upstream
        self.namespaces = dict(OLD_NAMESPACES)
        self.labels: dict[str, dict[str, str]] = {}  # by namespace, those a deploy set
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}  # by namespace, as the API lists them
        self.ended_pods: list[dict[str, Any]] = []  # listed beside the release's pod once installed
        self.upstreams: dict[str, str] = {}  # by namespace, a server other than `upstream` behind its Service
        self.lock = threading.Lock()
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any, content_type: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with cluster.lock, cluster.log.open("a") as fh:
                    fh.write(json.dumps({"who": "k8s", "method": self.command, "path": self.path}) + "\n")
                certified = tls is not None and bool(self.connection.getpeercert())
                if self.headers.get("authorization") != f"Bearer {TOKEN}" and not certified:
                    return self._reply(401, {"message": "Unauthorized"})
                status, answer, kind = cluster.route(self.command, self.path, body, self.headers)
                self._reply(status, answer, kind)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        # a short poll: shutdown() waits for it, at every test's end
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def route(self, method: str, path: str, body: bytes, headers: Any) -> tuple[int, Any, str]:
        json_type = "application/json"
        path = path.split("?")[0]
        if path == "/api/v1/namespaces" and method == "GET":
            items = [
                {
                    "metadata": {"name": n, "creationTimestamp": t, "labels": self.labels.get(n, {})},
                    "status": {"phase": "Active"},
                }
                for n, t in self.namespaces.items()
            ]
            return 200, {"items": items}, json_type
        if path == "/api/v1/namespaces" and method == "POST":
            meta = json.loads(body)["metadata"]
            if meta["name"] in self.namespaces:
                return 409, {"message": "AlreadyExists"}, json_type
            self.namespaces[meta["name"]] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.labels[meta["name"]] = meta.get("labels") or {}
            return 201, {}, json_type
        if (m := re.fullmatch(r"/api/v1/namespaces/([^/]+)", path)) and method == "PATCH":
            if m[1] not in self.namespaces:
                return 404, {"message": "NotFound"}, json_type
            self.labels.setdefault(m[1], {}).update(json.loads(body)["metadata"]["labels"])
            return 200, {"metadata": {"name": m[1], "labels": self.labels[m[1]]}}, json_type
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)", path):
            self.namespaces.pop(m[1], None)
            self.labels.pop(m[1], None)
            return 200, {}, json_type
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets(?:/([^/]+))?", path):
            secret = json.loads(body)
            key = (m[1], secret["metadata"]["name"])
            if method == "PUT" and key not in self.secrets:
                return 404, {"message": "NotFound"}, json_type
            self.secrets[key] = secret
            return (201 if method == "POST" else 200), secret, json_type
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/events", path):
            return 200, {"items": self.events.get(m[1], [])}, json_type
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path):
            installed = self.state / f"installed-{m[1]}"
            ready = installed.exists()
            image = (installed.read_text() if ready else "") or "wms-model:latest"
            pods = [
                {
                    "metadata": {"name": "wms-model-abc"},
                    "spec": {"containers": [{"name": "wms-model", "image": image}]},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                }
            ]
            return 200, {"items": pods + self.ended_pods if ready else []}, json_type
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/services/wms-model:http/proxy(/.*)", path):
            if m[1] not in self.namespaces:
                return 404, {"message": 'services "wms-model" not found'}, json_type
            if not (self.state / f"installed-{m[1]}").exists():
                return 503, {"message": 'no endpoints available for service "wms-model"'}, json_type
            answer = httpx.request(
                method,
                self.upstreams.get(m[1], self.upstream) + m[2],
                content=body,
                headers={"content-type": headers.get("content-type", "")},
            )
            return answer.status_code, answer.content, answer.headers.get("content-type", "")
        return 404, {"message": f"no route {method} {path}"}, json_type

    def __enter__(self) -> FakeCluster:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


REPO = Path(__file__).resolve().parents[2]


def write_kubeconfig(path: Path, server: str) -> None:
    """A kubeconfig whose current context reaches `server` with the fake cluster's TOKEN."""
    path.write_text(
        json.dumps(
            {
                "current-context": "k3s",
                "contexts": [{"name": "k3s", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": TOKEN}}],
            }
        )
    )


FAKE_TOOL = """#!{python}
import json, os, sys
args = sys.argv[1:]
stdin = "" if sys.stdin is None or sys.stdin.closed else sys.stdin.read()
with open(os.environ["WMS_FAKE_LOG"], "a") as log:
    record = {{"who": "{name}", "args": args, "stdin": stdin, "kubeconfig": os.environ.get("KUBECONFIG")}}
    log.write(json.dumps(record) + "\\n")
if "{name}" == "helm" and args[0] == "status":  # the release as a killed helm left it, or none
    left = os.environ.get("WMS_FAKE_HELM_STATUS")
    print(json.dumps({{"info": {{"status": left}}}})) if left else sys.exit("Error: release: not found")
    sys.exit(0)
if os.environ.get("WMS_FAKE_FAIL") == " ".join(["{name}", *args[:2]]):
    sys.exit("Error response from daemon: conflict")
if "{name}" == "helm" and args[:2] == ["upgrade", "--install"]:
    namespace = args[args.index("--namespace") + 1]
    if os.environ.get("WMS_FAKE_FAIL_IN") == namespace:  # helm --atomic gave up and rolled back
        sys.exit("Error: UPGRADE FAILED: release wms-model failed, and has been rolled back due to atomic "
                 "being set")
    if os.environ.get("WMS_FAKE_UNSERVED") == namespace:  # installed, yet nothing answers there
        sys.exit(0)
    values = dict(a.split("=", 1) for a in args if a.startswith("image."))
    with open(os.path.join(os.environ["WMS_FAKE_STATE"], "installed-" + namespace), "w") as pod:
        pod.write(values["image.repository"] + ":" + values["image.tag"])  # what its pod runs
    print(os.environ.get("WMS_FAKE_HELM_NOTES", ""))  # what helm prints after an upgrade
if os.environ.get("WMS_FAKE_FAIL", "").startswith("{name}:"):
    sys.exit(os.environ["WMS_FAKE_FAIL"].split(":", 1)[1])  # the message on stderr, exit code 1
print("{name} ok")
"""


@pytest.fixture
def cluster_project(
    served_project: Path,
    exported_model: Path,
    tmp_path: Path,
    aws_env: str,
    monkeypatch: pytest.MonkeyPatch,
    live_server: Callable[[object], Any],
) -> Iterator[tuple[Path, FakeCluster]]:
    """A checkout-like project (sources, chart, Dockerfile), fake tools first on PATH, a fake cluster."""
    for name in ("pyproject.toml", "constraints.txt", "README.md"):
        shutil.copy2(REPO / name, served_project / name)
    for folder in ("src", "docker", "devops", "infrastructure"):
        shutil.copytree(REPO / folder, served_project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for tool in ("docker", "helm"):
        (bin_dir / tool).write_text(FAKE_TOOL.format(python=sys.executable, name=tool))
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.touch()
    for name, value in {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "WMS_FAKE_LOG": str(log),
        "WMS_FAKE_STATE": str(state),
    }.items():
        monkeypatch.setenv(name, value)

    sha = hashlib.sha256((exported_model / "model.onnx").read_bytes()).hexdigest()
    served = load_folder(exported_model, ModelCard(version="1", onnx_sha256=sha))
    with live_server(create_app(served, ServeSettings())) as pod, FakeCluster(log, state, pod.url) as cluster:
        kubeconfig = tmp_path / "kubeconfig"
        write_kubeconfig(kubeconfig, cluster.url)
        with (served_project / "wms.toml").open("a") as fh:
            fh.write(f'\n[deploy]\ntarget = "k8s"\nkeep_namespaces = 2\nkubeconfig = "{kubeconfig}"\n')
        yield served_project, cluster
