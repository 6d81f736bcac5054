"""Deploy targets: a local process behind a proxy (default) and Kubernetes via Helm."""

from wms.deploy.base import Deployer, DeployResult, make_deployer

__all__ = ["DeployResult", "Deployer", "make_deployer"]
