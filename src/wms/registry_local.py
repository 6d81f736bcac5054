"""The embedded MLflow's artifacts after its project folder moved.

MLflow stores a local artifact location as a full path: the experiment's `artifact_location`
and every run's `artifact_uri` (a relative one is resolved against the working directory
when the experiment is created, mlflow/mlflow#7670; a relative form is an open request,
mlflow/mlflow#3144). A project moved or copied elsewhere keeps its `.wms/mlflow.db` and
`.wms/mlartifacts/`, but the database still names the old folder. A run's files are
`<artifact root>/<run id>/artifacts` (MLflow's layout for a SQL store), so they are found
again under the project's artifact root, and files added to such a run later (a gate report,
`wms model migrate`'s MLmodel) go there too, not into a re-created old folder.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from wms.config import Project
from wms.errors import RegistryError

ARTIFACTS = "artifacts"  # the folder MLflow's SQL store gives each run under the experiment's location


def artifact_root(project: Project, tracking_uri: str) -> Path | None:
    """The project's artifact root, for the embedded (SQLite) MLflow; None for a server."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    return project.path(project.settings.tracking.artifact_root).resolve()


def local_path(uri: str) -> Path | None:
    """The folder a `file:` URI or a plain path names; None for any other scheme (s3:, mlflow-artifacts:)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme == "" and uri.startswith("/"):
        return Path(uri)
    return None


def moved_run_folder(artifact_uri: str, run_id: str, root: Path) -> Path | None:
    """Where the artifacts of run `run_id` are now, when MLflow's `artifact_uri` for them names a
    folder that is gone and `root` (the project's artifact root) holds them; None when the
    recorded place holds them, or the URI is not a local folder. RegistryError when neither does."""
    recorded = local_path(artifact_uri)
    here = root / run_id / ARTIFACTS
    if recorded is None or recorded.exists() or recorded == here:  # the last: a run with no files yet
        return None
    if not here.is_dir():
        raise RegistryError(
            f"the files of run {run_id} are recorded at {recorded}, which is gone, and {here} does not "
            "hold them either (MLflow records full paths: a project moved without its artifacts folder "
            "leaves them behind); copy the old project's artifacts folder to "
            f"{root}, or train the model again"
        )
    return here


def elsewhere(location: str, root: Path) -> Path | None:
    """The folder an experiment's local `location` names, when it is not `root`; None when it is,
    or when it is not a local folder (an S3 bucket, a server's proxy)."""
    path = local_path(location)
    if path is None or path == root or (path.exists() and root.exists() and path.samefile(root)):
        return None
    return path
