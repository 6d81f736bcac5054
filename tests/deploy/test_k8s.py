"""The k8s deploy against a fake cluster: fake docker/helm on PATH, ECR on moto, a fake Kubernetes API.

Everything the deploy does lands in one log, in order: the tools' arguments and the API calls.
The fake API proxies Service requests to a real `wms serve` app, so the health check and the
smoke prediction are real answers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from wms.config import ServeSettings
from wms.serve.app import create_app
from wms.serve.model import ModelCard, load_folder

REPO = Path(__file__).resolve().parents[2]
TOKEN = "fake-token"
OLD_NAMESPACES = {
    "model-7": "2026-01-01T00:00:00Z",
    "model-9": "2026-02-01T00:00:00Z",  # newer than model-8 although its number is larger: time decides
    "model-8": "2026-03-01T00:00:00Z",
    "kube-system": "2025-12-01T00:00:00Z",
    "default": "2025-12-01T00:00:00Z",
}

FAKE_TOOL = """#!{python}
import json, os, sys
args = sys.argv[1:]
stdin = "" if sys.stdin is None or sys.stdin.closed else sys.stdin.read()
with open(os.environ["WMS_FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"who": "{name}", "args": args, "stdin": stdin}}) + "\\n")
if "{name}" == "helm" and args[:2] == ["upgrade", "--install"]:
    namespace = args[args.index("--namespace") + 1]
    open(os.path.join(os.environ["WMS_FAKE_STATE"], "installed-" + namespace), "w").close()
print("{name} ok")
"""


class FakeCluster:
    """A Kubernetes API on loopback that records every call and keeps namespaces and secrets."""

    def __init__(self, log: Path, state: Path, upstream: str) -> None:
        self.log, self.state, self.upstream = log, state, upstream
        self.namespaces = dict(OLD_NAMESPACES)
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
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
                if self.headers.get("authorization") != f"Bearer {TOKEN}":
                    return self._reply(401, {"message": "Unauthorized"})
                status, answer, kind = cluster.route(self.command, self.path, body, self.headers)
                self._reply(status, answer, kind)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def route(self, method: str, path: str, body: bytes, headers: Any) -> tuple[int, Any, str]:
        json_type = "application/json"
        path = path.split("?")[0]
        if path == "/api/v1/namespaces" and method == "GET":
            items = [
                {"metadata": {"name": n, "creationTimestamp": t}, "status": {"phase": "Active"}}
                for n, t in self.namespaces.items()
            ]
            return 200, {"items": items}, json_type
        if path == "/api/v1/namespaces" and method == "POST":
            name = json.loads(body)["metadata"]["name"]
            if name in self.namespaces:
                return 409, {"message": "AlreadyExists"}, json_type
            self.namespaces[name] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return 201, {}, json_type
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)", path):
            self.namespaces.pop(m[1], None)
            return 200, {}, json_type
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets(?:/([^/]+))?", path):
            secret = json.loads(body)
            key = (m[1], secret["metadata"]["name"])
            if method == "PUT" and key not in self.secrets:
                return 404, {"message": "NotFound"}, json_type
            self.secrets[key] = secret
            return (201 if method == "POST" else 200), secret, json_type
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path):
            ready = (self.state / f"installed-{m[1]}").exists()
            pods = [
                {
                    "metadata": {"name": "wms-model-abc"},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                }
            ]
            return 200, {"items": pods if ready else []}, json_type
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/services/wms-model:http/proxy(/.*)", path):
            answer = httpx.request(
                method,
                self.upstream + m[2],
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
        kubeconfig.write_text(
            json.dumps(
                {
                    "current-context": "k3s",
                    "contexts": [{"name": "k3s", "context": {"cluster": "c", "user": "u"}}],
                    "clusters": [{"name": "c", "cluster": {"server": cluster.url}}],
                    "users": [{"name": "u", "user": {"token": TOKEN}}],
                }
            )
        )
        with (served_project / "wms.toml").open("a") as fh:
            fh.write(f'\n[deploy]\ntarget = "k8s"\nkeep_namespaces = 2\nkubeconfig = "{kubeconfig}"\n')
        yield served_project, cluster


def _calls(cluster: FakeCluster) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cluster.log.read_text().splitlines()]


def _label(call: dict[str, Any]) -> str:
    if call["who"] == "k8s":
        return f"k8s {call['method']} {call['path'].split('?')[0]}"
    return f"{call['who']} {call['args'][0]}"


def test_the_seed_steps_run_in_order_and_old_namespaces_go(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any]
) -> None:
    root, cluster = cluster_project
    result = cli("deploy")
    assert result.exit_code == 0, result.output
    steps = re.findall(r"^\[(\d)/8\] (.*)$", result.output, re.M)
    assert [int(n) for n, _ in steps] == list(range(1, 9))
    assert [text.split()[0] for _, text in steps] == [
        "ECR",
        "built",
        "refreshed",
        "registry:",
        "helm",
        "pods",
        "health",
        "removed",
    ]

    calls = _calls(cluster)
    assert [_label(c) for c in calls] == [
        "docker login",
        "docker build",
        "docker push",
        "k8s POST /api/v1/namespaces",
        "k8s PUT /api/v1/namespaces/model-1/secrets/ecr-pull-secret",
        "k8s POST /api/v1/namespaces/model-1/secrets",
        "helm upgrade",
        "k8s GET /api/v1/namespaces/model-1/pods",
        "k8s GET /api/v1/namespaces/model-1/services/wms-model:http/proxy/ready",
        "k8s POST /api/v1/namespaces/model-1/services/wms-model:http/proxy/predict",
        "k8s GET /api/v1/namespaces",
        "k8s DELETE /api/v1/namespaces/model-7",
        "k8s DELETE /api/v1/namespaces/model-9",
    ]
    login, build, push, helm = calls[0], calls[1], calls[2], calls[6]
    host = login["args"][-1]
    assert host.endswith(".amazonaws.com") and login["args"][:3] == ["login", "--username", "AWS"]
    image = build["args"][build["args"].index("-t") + 1]
    assert image.startswith(f"{host}/wms-model:v1-") and push["args"] == ["push", image]
    assert helm["args"][:12] == [
        "upgrade", "--install", "wms-model", str(root / "devops/helm/wms-model"),
        "--namespace", "model-1", "--create-namespace", "--atomic", "--wait",
        "--timeout", "300s", "-f",
    ]  # fmt: skip
    assert helm["args"][12] == str(root / "infrastructure/helm-values.yaml")
    assert f"image.tag={image.rsplit(':', 1)[1]}" in helm["args"]
    # no models/production_current.json here yet: the alerts expect the version deployed
    assert helm["args"][-4:] == [
        "--set-string", "model.version=1", "--set-string", "monitoring.expectedModelVersion=1",
    ]  # fmt: skip

    secret = cluster.secrets[("model-1", "ecr-pull-secret")]
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert config["auths"][host]["password"] == login["stdin"]  # the token docker logged in with
    assert sorted(cluster.namespaces) == ["default", "kube-system", "model-1", "model-8"]
    context = root / ".wms/deploy/k8s-build"
    assert json.loads((context / "model/serving.json").read_text())["version"] == "1"
    assert (context / "docker/Dockerfile").is_file() and (context / "src/wms/serve/app.py").is_file()


def test_a_service_answering_with_another_version_stops_before_cleanup(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any], exported_model: Path, live_server: Any
) -> None:
    _, cluster = cluster_project
    served = load_folder(
        exported_model, ModelCard(version="0", onnx_sha256=load_folder(exported_model).card.onnx_sha256)
    )
    with live_server(create_app(served, ServeSettings())) as wrong:
        cluster.upstream = wrong.url
        result = cli("deploy")
    assert result.exit_code == 1
    assert "serves model 0, not 1" in result.output and "Traceback" not in result.output
    assert not any(c.get("method") == "DELETE" for c in _calls(cluster))
    assert set(OLD_NAMESPACES) <= set(cluster.namespaces)


def test_dry_run_prints_the_plan_and_calls_nothing(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any]
) -> None:
    _, cluster = cluster_project
    result = cli("deploy", "--dry-run")
    assert result.exit_code == 0
    assert "helm upgrade --install wms-model" in result.output and "--namespace model-1" in result.output
    assert "keeping the newest 2" in result.output
    assert _calls(cluster) == []


def test_the_alerts_expect_the_version_mains_pointer_names(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any]
) -> None:
    root, cluster = cluster_project
    pointer = root / "models" / "production_current.json"
    pointer.parent.mkdir()
    pointer.write_text(json.dumps({"action": "rollback", "from_version": "6", "to_version": "5"}))
    result = cli("deploy", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "--set-string model.version=1 --set-string monitoring.expectedModelVersion=5" in result.output
    pointer.write_text("{not json")
    result = cli("deploy")
    assert result.exit_code == 1 and "names no model version" in result.output
    assert "Traceback" not in result.output and _calls(cluster) == []  # stopped before building
