"""The few Kubernetes API calls a deploy needs, over HTTPS with the kubeconfig's credentials.

A small httpx client rather than the official `kubernetes` package: a deploy makes six
kinds of request (namespace get/create/list/delete, secret replace, pod list, service proxy),
and the official client brings ~10 dependencies and a generated API of thousands of classes
for them. Tests point it at a fake API server on loopback.
"""

from __future__ import annotations

import base64
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from wms.errors import BackendError, ConfigError


@dataclass(frozen=True)
class Namespace:
    name: str
    created: str  # RFC 3339, sorts in time order
    phase: str


class KubeClient:
    """Kubernetes API calls with one-line errors that say which call failed and why."""

    def __init__(self, client: httpx.Client, server: str) -> None:
        self._http, self.server = client, server

    @classmethod
    def from_kubeconfig(cls, path: str = "") -> KubeClient:
        """The current context of `path` (empty: $KUBECONFIG, else ~/.kube/config)."""
        file = Path(
            path or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
        ).expanduser()
        try:
            config = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read the kubeconfig {file} ({exc}); set deploy.kubeconfig") from None
        try:
            context_name = config["current-context"]
            context = _named(config, "contexts", context_name)["context"]
            cluster = _named(config, "clusters", context["cluster"])["cluster"]
            user = _named(config, "users", context["user"]).get("user", {})
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"kubeconfig {file} lacks {exc} in its current context; check it") from None
        headers: dict[str, str] = {}
        cert: tuple[str, str] | None = None
        verify: bool | str = True
        files = tempfile.mkdtemp(prefix="wms-kube-")
        if user.get("token"):
            headers["Authorization"] = f"Bearer {user['token']}"
        elif user.get("client-certificate-data"):  # k3s writes client certificates, not tokens
            cert = (_decoded(files, "client.crt", user["client-certificate-data"]),
                    _decoded(files, "client.key", user["client-key-data"]))  # fmt: skip
        if cluster.get("insecure-skip-tls-verify"):
            verify = False
        elif cluster.get("certificate-authority-data"):
            verify = _decoded(files, "ca.crt", cluster["certificate-authority-data"])
        elif cluster.get("certificate-authority"):
            verify = cluster["certificate-authority"]
        server = str(cluster["server"]).rstrip("/")
        client = httpx.Client(base_url=server, headers=headers, cert=cert, verify=verify, timeout=30)
        return cls(client, server)

    def _call(
        self, what: str, method: str, url: str, ok: tuple[int, ...] = (200,), **kw: Any
    ) -> httpx.Response:
        try:
            answer = self._http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            raise BackendError(f"Kubernetes API at {self.server} could not {what}: {exc}") from None
        if answer.status_code not in ok:
            try:
                message = answer.json().get("message", answer.text)
            except ValueError:
                message = answer.text[:200]
            raise BackendError(f"Kubernetes API could not {what}: {answer.status_code} {message}")
        return answer

    def ensure_namespace(self, name: str, labels: dict[str, str]) -> bool:
        """Create the namespace unless it exists; True when it was created."""
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
        answer = self._call(f"create namespace {name}", "POST", "/api/v1/namespaces", (201, 409), json=body)
        return answer.status_code == 201

    def apply_secret(self, namespace: str, body: dict[str, Any]) -> None:
        """Replace the secret, or create it when it does not exist yet."""
        name = body["metadata"]["name"]
        url = f"/api/v1/namespaces/{namespace}/secrets"
        answer = self._call(f"replace secret {name}", "PUT", f"{url}/{name}", (200, 201, 404), json=body)
        if answer.status_code == 404:
            self._call(f"create secret {name}", "POST", url, (201,), json=body)

    def namespaces(self, prefix: str) -> list[Namespace]:
        items = self._call("list namespaces", "GET", "/api/v1/namespaces").json().get("items", [])
        found = [
            Namespace(
                i["metadata"]["name"],
                i["metadata"].get("creationTimestamp", ""),
                i.get("status", {}).get("phase", ""),
            )
            for i in items
        ]
        return [n for n in found if n.name.startswith(prefix)]

    def delete_namespace(self, name: str) -> None:
        self._call(f"delete namespace {name}", "DELETE", f"/api/v1/namespaces/{name}", (200, 202, 404))

    def wait_pods_ready(self, namespace: str, selector: str, timeout: float) -> list[str]:
        """Names of the ready pods once all pods matching `selector` are ready."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self._call(
                f"list pods in {namespace}", "GET", f"/api/v1/namespaces/{namespace}/pods",
                params={"labelSelector": selector},
            )  # fmt: skip
            pods = answer.json().get("items", [])
            ready = [p["metadata"]["name"] for p in pods if _ready(p)]
            if pods and len(ready) == len(pods):
                return ready
            if time.monotonic() > deadline:
                raise BackendError(
                    f"pods {selector} in {namespace} not ready after {timeout:g} s ({len(ready)}/{len(pods)} "
                    f"ready); see `kubectl -n {namespace} describe pods`"
                )
            time.sleep(1)

    def service_proxy(self, namespace: str, service: str, port: str, path: str, **kw: Any) -> httpx.Response:
        """A request to a Service through the API server's proxy (no port-forward, no ingress needed)."""
        url = f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy{path}"
        method = "POST" if "files" in kw else "GET"
        return self._call(f"reach {service}{path} in {namespace}", method, url, (200,), timeout=60, **kw)


def _named(config: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    for entry in config.get(kind) or []:
        if entry.get("name") == name:
            return dict(entry)
    raise KeyError(f"{kind} entry {name!r}")


def _decoded(folder: str, name: str, data: str) -> str:
    path = Path(folder) / name
    path.write_bytes(base64.b64decode(data))
    path.chmod(0o600)
    return str(path)


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
