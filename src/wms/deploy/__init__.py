"""Deploy targets, chosen by `deploy.target`: `local` (a uvicorn process behind a proxy) or `k8s`
(Helm on k3s). `make_deployer` is the one way in; `wms.deploy.base` holds what both share.

The targets are imported when asked for, so that `python -m wms.deploy.proxy` (the local
deploy's stable port, and the cluster's production address) starts on the proxy's own imports
alone: none of numpy, Pillow, lightkube or the registry."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from wms.errors import ConfigError

if TYPE_CHECKING:
    from wms.config import Project
    from wms.deploy.base import Deployer, Echo
    from wms.registry import Registry

# target -> (module, class)
TARGETS: dict[str, tuple[str, str]] = {
    "local": ("wms.deploy.local", "LocalDeployer"),
    "k8s": ("wms.deploy.k8s", "K8sDeployer"),
}


def make_deployer(project: Project, echo: Echo | None = None, registry: Registry | None = None) -> Deployer:
    """The deployer `deploy.target` names; `echo` receives one line per step (default: print)."""
    target = project.settings.deploy.target
    if target not in TARGETS:
        raise ConfigError(f"deploy.target {target!r} is unknown; valid targets: {', '.join(TARGETS)}")
    module, name = TARGETS[target]
    deployer: Deployer = getattr(import_module(module), name)(project, echo or print, registry)
    return deployer


def check_deploy_settings(project: Project) -> None:
    """Refuse the deploy settings a deploy would fail on: a smoke photo that cannot be read and,
    for k8s, a missing chart, values file, Dockerfile, docker or helm. A pipeline run that deploys
    (deploy.in_pipeline) asks before it records anything, not at its last stage."""
    from wms.deploy.base import reference_photo

    if project.settings.deploy.smoke_image:
        reference_photo(project)
    if project.settings.deploy.target == "k8s":
        from wms.deploy.k8s import K8sDeployer

        K8sDeployer(project, print).check()


__all__ = ["TARGETS", "check_deploy_settings", "make_deployer"]
