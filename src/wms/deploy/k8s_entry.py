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

import json
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
# How a chart's NOTES begin the line that says it left its ServiceMonitor and PrometheusRule out:
# the cluster lacks the Prometheus operator's CRDs (its install failed), and serving goes on.
UNMONITORED = "NOT MONITORED:"
# The model chart's values the address takes too. serve.*: an upload the model would still take,
# or headers it would still wait for, must not get a 408 (or a 413) from the address first.
# serviceMonitor.* and prometheusRule.*: the cluster's Prometheus finds and alerts on the address
# as it does on the model pods (the operator's selector labels, whether its CRDs are used).
SHARED = {
    "serve": ("uploadTimeoutSeconds", "headerTimeoutSeconds", "maxUploadMb"),
    "serviceMonitor": ("enabled", "interval", "labels"),
    "prometheusRule": ("enabled", "labels", "errorRatio"),
}


def model_values(chart: Path, values_file: Path) -> dict[str, dict[str, object]]:
    """The `SHARED` values of the model's release: the model chart's defaults under the
    cluster's values file (deploy.values_file), as helm merges them."""
    found: dict[str, dict[str, object]] = {section: {} for section in SHARED}
    for path in (chart / "values.yaml", values_file):
        try:
            values = yaml.safe_load(path.read_text()) or {}
            for section, keys in SHARED.items():
                given = values.get(section) or {}
                found[section] |= {key: given[key] for key in keys if key in given}
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            raise ConfigError(f"cannot read the values of {path}: {exc}") from None
    return found


def unmonitored(helm_output: str) -> str:
    """The NOT MONITORED line of a chart's NOTES in `helm_output`, as "; <line>"; "" without one."""
    return "".join(
        f"; {line.strip()}" for line in helm_output.splitlines() if line.strip().startswith(UNMONITORED)
    )


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
            *self._shared(),
        ]  # fmt: skip

    def _shared(self) -> list[str]:
        """Arguments that give the proxy the model pods' deadlines, a body limit no lower than
        their uploads' (wms.deploy.proxy.body_limit_mb), and their ServiceMonitor and
        PrometheusRule settings."""
        values = model_values(self.model_chart, self.values_file)
        serve = values.pop("serve")
        upload_mb = serve.pop("maxUploadMb", None)
        sets = [f"serve.{key}={value}" for key, value in serve.items()]
        if isinstance(upload_mb, int | float):
            sets.append(f"maxBodyMb={body_limit_mb(upload_mb):g}")
        args = [a for s in sets for a in ("--set", s)]
        for section, given in values.items():  # a whole map (labels) in one argument
            if given:
                args += [
                    "--set-json",
                    f"{section}={json.dumps(given, sort_keys=True, separators=(',', ':'))}",
                ]
        return args

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
        self, kube: KubeClient, run: Callable[[list[str]], str], upstream: str, image: str, version: str,
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
        self, kube: KubeClient, run: Callable[[list[str]], str], upstream: str, image: str, version: str
    ) -> str:
        """Point the address at the Service in `upstream`, which serves `version` from `image`
        (`run` runs the helm command and returns its output); the step's line, which says what it
        served before, and that nothing watches the address where the cluster lacks the CRDs."""
        before = self.served(kube)
        out = run(self.helm_args(upstream, image, version))
        self.wait_serving(kube, version)
        was = "" if before == version else f" (was {_model(before)})"
        return f"production address {self.where()} now serves model {version}{was}{unmonitored(out)}"
