"""The cluster's production address: one Service whose name stays while the version behind it moves.

Every model version serves in a namespace of its own (`model-<version>`), and the newest few stay
installed for a rollback, each still answering. Without one address a client would have to name a
version's namespace, be moved by hand at every promotion, and go on being answered by the old
model meanwhile. The release `deploy.release` of `deploy.entry_chart` (devops/helm/wms-entry) in
namespace `deploy.entry_namespace` is that address: the deploy proxy (`wms.deploy.proxy`, the
local target's stable port) from the serving image, forwarding to one version's Service.

`wms deploy` switches it only once the new version has answered its smoke check, and returns only
when the address itself answers /ready with that version: until then, and if the switch fails
(helm's --atomic puts the release back), it goes on serving the version before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from wms.deploy.proxy import body_limit_mb
from wms.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from wms.config import DeploySettings, Project
    from wms.deploy.kube import KubeClient

MANAGED = {"app.kubernetes.io/managed-by": "wms"}
# The model pods' serve.* values its proxy must share: an upload the model would still take, or
# headers it would still wait for, must not get a 408 (or a 413) from the address first.
SHARED_SERVE = ("uploadTimeoutSeconds", "headerTimeoutSeconds", "maxUploadMb")


def model_serve_values(chart: Path, values_file: Path) -> dict[str, object]:
    """The model pods' `SHARED_SERVE` values: the model chart's defaults under the cluster's
    values file (deploy.values_file), as helm merges them for the model's release."""
    found: dict[str, object] = {}
    for path in (chart / "values.yaml", values_file):
        try:
            serve = (yaml.safe_load(path.read_text()) or {}).get("serve") or {}
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            raise ConfigError(f"cannot read the serve values of {path}: {exc}") from None
        found |= {key: serve[key] for key in SHARED_SERVE if key in serve}
    return found


def _model(version: str | None) -> str:
    """What answers: "model <version>", or "nothing"."""
    return f"model {version}" if version else "nothing"


@dataclass(frozen=True)
class Entry:
    """The production address of a cluster: Service `release` in `namespace`."""

    namespace: str
    release: str  # also the name of each version's release and Service, which it forwards to
    chart: Path
    helm: str
    pull_secret: str
    timeout: float  # deploy.ready_timeout_seconds: for helm's --wait, then for the address to answer
    model_chart: Path  # with the cluster's values file, where the model pods' serve.* values come from
    values_file: Path

    @classmethod
    def of(cls, project: Project) -> Entry | None:
        """The address `deploy.entry_namespace` names; None where it is empty (no address)."""
        cfg: DeploySettings = project.settings.deploy
        if not cfg.entry_namespace:
            return None
        chart, model_chart, values = (project.path(p) for p in (cfg.entry_chart, cfg.chart, cfg.values_file))
        timeout = cfg.ready_timeout_seconds
        return cls(
            cfg.entry_namespace, cfg.release, chart, cfg.helm, cfg.pull_secret, timeout, model_chart, values
        )

    def where(self) -> str:
        return f"svc/{self.release} in namespace {self.namespace}"

    def helm_args(self, upstream: str, image: str, version: str) -> list[str]:
        """`helm upgrade --install` of the address, forwarding to the Service in `upstream`."""
        repository, _, tag = image.rpartition(":")
        return [
            self.helm, "upgrade", "--install", self.release, str(self.chart),
            "--namespace", self.namespace, "--create-namespace", "--atomic", "--wait",
            "--timeout", f"{int(self.timeout)}s",
            "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
            "--set", f"imagePullSecrets[0].name={self.pull_secret}",
            "--set", f"upstream.namespace={upstream}", "--set", f"upstream.service={self.release}",
            "--set-string", f"upstream.version={version}",
            *self._shared_serve(),
        ]  # fmt: skip

    def _shared_serve(self) -> list[str]:
        """--set arguments that give the proxy the model pods' deadlines and a body limit no
        lower than their uploads' (wms.deploy.proxy.body_limit_mb)."""
        values = model_serve_values(self.model_chart, self.values_file)
        upload_mb = values.pop("maxUploadMb", None)
        sets = [f"serve.{key}={value}" for key, value in values.items()]
        if isinstance(upload_mb, int | float):
            sets.append(f"maxBodyMb={body_limit_mb(upload_mb):g}")
        return [a for s in sets for a in ("--set", s)]

    def served(self, kube: KubeClient) -> str | None:
        """The version the address answers /ready with; None where nothing answers there."""
        return kube.served_version(self.namespace, self.release, "http")

    def wait_serving(self, kube: KubeClient, version: str, poll: float = 1.0) -> None:
        """Return once the address answers /ready with `version` (the old pod of the switch may
        still answer for its drain time); a BackendError naming what it serves after the timeout."""
        deadline = time.monotonic() + self.timeout
        while (served := self.served(kube)) != version:
            if time.monotonic() > deadline:
                raise BackendError(
                    f"the production address ({self.where()}) serves "
                    f"{_model(served)} {self.timeout:g} s after its switch to "
                    f"model {version}; see `kubectl -n {self.namespace} describe pods`"
                )
            time.sleep(poll)

    def plan(self, upstream: str, image: str, version: str, expected: str) -> list[str]:
        """The dry run's lines for a deploy of `version` while main names `expected`."""
        if expected != version:
            return [
                f"leave the production address ({self.where()}) as it is: main's production is {expected}"
            ]
        return [
            " ".join(self.helm_args(upstream, image, version)),
            f"wait until the production address ({self.where()}) answers /ready with {version}",
        ]

    def follow(
        self, kube: KubeClient, run: Callable[[list[str]], object], upstream: str, image: str, version: str,
        expected: str,
    ) -> str:  # fmt: skip
        """Switch the address to `version` where it is main's production (`expected`); a version
        deployed by hand while main names another leaves it alone, so clients stay on main's.
        The step's line."""
        if expected == version:
            return self.switch(kube, run, upstream, image, version)
        served = self.served(kube)
        return (
            f"production address {self.where()} left on {_model(served)}: "
            f"it follows main's production ({expected})"
        )

    def switch(
        self, kube: KubeClient, run: Callable[[list[str]], object], upstream: str, image: str, version: str
    ) -> str:
        """Point the address at the Service in `upstream`, which serves `version` from `image`
        (`run` runs the helm command); the step's line, which says what it served before."""
        before = self.served(kube)
        run(self.helm_args(upstream, image, version))
        self.wait_serving(kube, version)
        was = "" if before == version else f" (was {_model(before)})"
        return f"production address {self.where()} now serves model {version}{was}"
