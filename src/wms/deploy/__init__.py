"""Deploy targets, chosen by `deploy.target`: `local` (a uvicorn process behind a proxy) or `k8s`
(Helm on k3s). `make_deployer` is the one way in; `wms.deploy.base` holds what both share."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from wms.config import Project
from wms.deploy.base import Deployer, DeployResult, Echo, reference_photo
from wms.deploy.k8s import K8sDeployer
from wms.deploy.local import LocalDeployer
from wms.errors import ConfigError

if TYPE_CHECKING:
    from wms.registry import Registry

TARGETS: dict[str, Callable[[Project, Echo, Registry | None], Deployer]] = {
    "local": LocalDeployer,
    "k8s": K8sDeployer,
}


def make_deployer(project: Project, echo: Echo | None = None, registry: Registry | None = None) -> Deployer:
    """The deployer `deploy.target` names; `echo` receives one line per step (default: print)."""
    target = project.settings.deploy.target
    deployer = TARGETS.get(target)
    if deployer is None:
        raise ConfigError(f"deploy.target {target!r} is unknown; valid targets: {', '.join(TARGETS)}")
    return deployer(project, echo or print, registry)


def check_deploy_settings(project: Project) -> None:
    """Refuse the deploy settings a deploy would fail on: a smoke photo that cannot be read and,
    for k8s, a missing chart, values file, Dockerfile, docker or helm. A pipeline run that deploys
    (deploy.in_pipeline) asks before it records anything, not at its last stage."""
    if project.settings.deploy.smoke_image:
        reference_photo(project)
    if project.settings.deploy.target == "k8s":
        K8sDeployer(project, print).check()


__all__ = ["TARGETS", "DeployResult", "Deployer", "check_deploy_settings", "make_deployer"]
