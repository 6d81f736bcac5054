"""The few Kubernetes API calls a deploy needs, through lightkube, with the kubeconfig kubectl would use.

lightkube's typed client creates, lists and deletes namespaces, replaces secrets and lists pods.
The Service proxy, for which lightkube has no verb, goes through the httpx client that lightkube's
own adapter builds from the same credentials, so both authenticate alike. Which kubeconfig, and
what lightkube lacks in reading one (several files, exec plugins): wms.deploy.kubeconfig.
Tests point it at a fake API server on loopback, over HTTP and over TLS.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

import httpx
from lightkube import Client
from lightkube.config.client_adapter import Client as HttpClient
from lightkube.config.client_adapter import ConnectionParams
from lightkube.core.exceptions import ConfigError as LightkubeConfigError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Pod, Secret
from lightkube.resources.core_v1 import Namespace as NamespaceResource
from lightkube.types import PatchType

from wms.deploy.kubeconfig import Kubeconfig, load
from wms.errors import BackendError, ConfigError

T = TypeVar("T")
RENEW_SECONDS = 60  # an exec plugin's credential is renewed this long before it expires
# A model namespace's labels: the version its release serves, and the one main named as it was
# deployed, which its WmsModelVersionNotProduction alert compares the served one with.
VERSION_LABEL, EXPECTED_LABEL = "wms/model-version", "wms/expected-version"


@dataclass(frozen=True)
class Namespace:
    name: str
    created: str  # RFC 3339 in UTC, sorts in time order
    phase: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def deployed_off_main(self) -> str:
        """The version main named when this namespace's release was deployed, where that is not
        the version it serves (its alert fires for as long as it stays); "" otherwise or unknown."""
        version, expected = self.labels.get(VERSION_LABEL), self.labels.get(EXPECTED_LABEL, "")
        return expected if version and expected != version else ""


class KubeClient:
    """Kubernetes API calls with one-line errors that say which call failed and why."""

    def __init__(self, kubeconfig: Kubeconfig) -> None:
        self._kubeconfig = kubeconfig
        self.server = kubeconfig.server.rstrip("/")
        self._connect()

    @classmethod
    def from_kubeconfig(cls, path: str = "") -> KubeClient:
        """The current context of `path` (empty: $KUBECONFIG, else ~/.kube/config)."""
        return cls(load(path))

    def _connect(self) -> None:
        """Clients with fresh credentials: an exec plugin runs here, so a broken one stops a deploy
        before it builds anything."""
        config, self._expires = self._kubeconfig.credentials()
        try:
            self._api = Client(config, timeout=httpx.Timeout(30))
            self._http = HttpClient(config, ConnectionParams(timeout=httpx.Timeout(60)))
        except (OSError, ValueError, LightkubeConfigError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(
                f"kubeconfig {self._kubeconfig.source}: the credentials of context "
                f"{config.context_name!r} cannot be used ({exc}); check them"
            ) from None

    @overload
    def _call(self, what: str, call: Callable[[], T]) -> T: ...
    @overload
    def _call(self, what: str, call: Callable[[], T], ok: tuple[int, ...]) -> T | None: ...

    def _call(self, what: str, call: Callable[[], T], ok: tuple[int, ...] = ()) -> T | None:
        """`call()`, or None when the API answers with a status in `ok`."""
        if time.time() > self._expires - RENEW_SECONDS:
            self._api.close()
            self._http.close()
            self._connect()
        try:
            return call()
        except httpx.HTTPStatusError as exc:  # lightkube's ApiError is one
            answer = exc.response
            if answer.status_code in ok:
                return None
            raise BackendError(
                f"Kubernetes API could not {what}: {answer.status_code} {_message(answer)}"
            ) from None
        except httpx.HTTPError as exc:
            raise BackendError(f"Kubernetes API at {self.server} could not {what}: {exc}") from None
        except LightkubeConfigError as exc:  # a token file gone since the start
            raise ConfigError(f"kubeconfig {self._kubeconfig.source}: {exc}") from None

    def ensure_namespace(self, name: str, labels: dict[str, str]) -> bool:
        """Create the namespace unless it exists; True when it was created."""
        body = NamespaceResource(metadata=ObjectMeta(name=name, labels=labels))
        return self._call(f"create namespace {name}", lambda: self._api.create(body), (409,)) is not None

    def label_namespace(self, name: str, labels: dict[str, str]) -> None:
        """Set `labels` on the namespace, keeping its others."""
        patch = {"metadata": {"labels": labels}}
        self._call(
            f"label namespace {name}",
            lambda: self._api.patch(NamespaceResource, name, patch, patch_type=PatchType.MERGE),
        )

    def apply_secret(self, namespace: str, body: dict[str, Any]) -> None:
        """Replace the secret, or create it when it does not exist yet."""
        name = body["metadata"]["name"]
        secret = Secret.from_dict({**body, "metadata": {**body["metadata"], "namespace": namespace}})
        if self._call(f"replace secret {name}", lambda: self._api.replace(secret), (404,)) is None:
            self._call(f"create secret {name}", lambda: self._api.create(secret))

    def namespaces(self, prefix: str) -> list[Namespace]:
        found = []
        for item in self._call("list namespaces", lambda: list(self._api.list(NamespaceResource))):
            meta, status = item.metadata, item.status
            stamp = meta.creationTimestamp if meta else None
            found.append(
                Namespace(
                    meta.name if meta and meta.name else "",
                    stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if stamp else "",
                    status.phase if status and status.phase else "",
                    dict(meta.labels or {}) if meta else {},
                )
            )
        return [n for n in found if n.name.startswith(prefix)]

    def delete_namespace(self, name: str) -> None:
        self._call(f"delete namespace {name}", lambda: self._api.delete(NamespaceResource, name), (404,))

    def wait_pods_ready(self, namespace: str, labels: dict[str, str], timeout: float) -> list[str]:
        """Names of the ready pods once all live pods with `labels` are ready.

        A pod that has ended (evicted, say: it stays listed as Failed until deleted) or is being
        deleted (the old one of a rolling update) is no longer part of the release.
        """
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        wanted: dict[str, Any] = {**labels}
        deadline = time.monotonic() + timeout
        while True:
            listed = self._call(
                f"list pods in {namespace}",
                lambda: list(self._api.list(Pod, namespace=namespace, labels=wanted)),
            )
            pods = [p for p in listed if _live(p)]
            ready = [p.metadata.name or "" for p in pods if p.metadata and _ready(p)]
            if pods and len(ready) == len(pods):
                return ready
            if time.monotonic() > deadline:
                raise BackendError(
                    f"pods {selector} in {namespace} not ready after {timeout:g} s ({len(ready)}/{len(pods)} "
                    f"ready); see `kubectl -n {namespace} describe pods`"
                )
            time.sleep(1)

    def last_warning(self, namespace: str, since: datetime) -> str:
        """The newest Warning event in the namespace from `since` on, on one line ("" when none).

        Events outlive the pods they are about, so this still says why a release that helm's
        --atomic has uninstalled never became ready (not scheduled, image not pulled, crashing).
        """
        events = self._call(
            f"list events in {namespace}", lambda: list(self._api.list(Event, namespace=namespace))
        )
        warnings = [e for e in events if e.type == "Warning" and _event_time(e) >= since]
        if not warnings:
            return ""
        latest = max(warnings, key=_event_time)
        about = latest.involvedObject
        text = " ".join(f"{about.kind or ''} {about.name or ''}: {latest.reason}: {latest.message}".split())
        return text[:300]

    def pod_images(self, namespace: str, labels: dict[str, str]) -> list[str]:
        """The images the live pods with `labels` run, one per container, sorted without repeats."""
        wanted: dict[str, Any] = {**labels}
        listed = self._call(
            f"list pods in {namespace}", lambda: list(self._api.list(Pod, namespace=namespace, labels=wanted))
        )
        containers = [c for p in listed if _live(p) and p.spec for c in p.spec.containers]
        return sorted({c.image for c in containers if c.image})

    def service_url(self, namespace: str, service: str, port: str) -> str:
        """The Service's root through the API server's proxy, as a person or a report names it."""
        return f"{self.server}{service_path(namespace, service, port, '/')}"

    def served_version(self, namespace: str, service: str, port: str) -> str | None:
        """The model version the Service's /ready names; None when nothing answers there: no such
        namespace or Service (404), no ready pod behind it (503), or none reached (502)."""
        url = service_path(namespace, service, port, "/ready")
        answer = self._call(
            f"reach {service}/ready in {namespace}",
            lambda: self._http.request("GET", url).raise_for_status(),
            (404, 502, 503),
        )
        if answer is None:
            return None
        try:
            version = answer.json().get("version")
        except (ValueError, AttributeError):
            return None  # not the model server's answer
        return None if version is None else str(version)

    def service_proxy(self, namespace: str, service: str, port: str, path: str, **kw: Any) -> httpx.Response:
        """A request to a Service through the API server's proxy (no port-forward, no ingress needed)."""
        url = service_path(namespace, service, port, path)
        method = "POST" if "files" in kw else "GET"
        return self._call(
            f"reach {service}{path} in {namespace}",
            lambda: self._http.request(method, url, **kw).raise_for_status(),
        )


def service_path(namespace: str, service: str, port: str, path: str) -> str:
    """`path` on a Service, through the API server's proxy."""
    return f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy{path}"


def _message(answer: httpx.Response) -> str:
    """The API's Status message (JSON), else the start of the body, on one line."""
    try:
        message = answer.json().get("message") or answer.text
    except (ValueError, AttributeError):
        message = answer.text
    return " ".join(str(message).split())[:200]


def _event_time(event: Event) -> datetime:
    meta = event.metadata
    stamp = event.lastTimestamp or event.eventTime or (meta.creationTimestamp if meta else None)
    return stamp.astimezone(UTC) if stamp else datetime.min.replace(tzinfo=UTC)


def _live(pod: Pod) -> bool:
    ended = pod.status is not None and pod.status.phase in ("Failed", "Succeeded")
    return not ended and not (pod.metadata and pod.metadata.deletionTimestamp)


def _ready(pod: Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)
