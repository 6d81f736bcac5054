"""The k8s target's serving image: an ECR login, and the build context it is made from.

The context holds the package's sources, its pins and the verified model folder, and nothing
else of the checkout; docker/Dockerfile installs them (`wms deploy` runs `docker build`).
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

from wms.config import Project
from wms.errors import BackendError, ConfigError

CONTEXT_FILES = ("pyproject.toml", "constraints.txt", "README.md")


def ecr_login(region: str) -> tuple[str, str, str]:
    """(registry host, user, password) from a fresh ECR token; `region` "" for boto3's default."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        ecr = boto3.client("ecr", region_name=region or None)
        data = ecr.get_authorization_token()["authorizationData"][0]
    except (BotoCoreError, ClientError) as exc:
        raise BackendError(
            f"ECR login failed: {exc}; check the AWS_* credentials and deploy.aws_region"
        ) from None
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    host = str(data["proxyEndpoint"]).removeprefix("https://").removeprefix("http://").rstrip("/")
    return host, user, password


def dockerconfig_secret(name: str, host: str, user: str, password: str) -> dict[str, object]:
    """The imagePullSecret that lets the cluster pull from `host` with the ECR token."""
    import json

    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    dockerconfig = {"auths": {host: {"username": user, "password": password, "auth": auth}}}
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name},
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(dockerconfig).encode()).decode()},
    }  # fmt: skip


def stage_context(project: Project, context: Path, version: str) -> Path:
    """The build context in `context`: the package sources, the pins, the Dockerfile and the
    verified folder of model `version` (staged under .wms/deploy/models)."""
    root = project.root
    missing = [name for name in ("pyproject.toml", "src") if not (root / name).exists()]
    if missing:
        raise ConfigError(
            f"{root} has no {' or '.join(missing)}: the image is built from the repository checkout; "
            "run `wms deploy` there"
        )
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    for name in CONTEXT_FILES:
        if (root / name).is_file():
            shutil.copy2(root / name, context / name)
    shutil.copytree(root / "src", context / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (context / "docker").mkdir()
    shutil.copy2(project.path(project.settings.deploy.dockerfile), context / "docker" / "Dockerfile")
    models = project.state_dir / "deploy" / "models"
    shutil.copytree(models / f"v{version}", context / "model")
    return context
