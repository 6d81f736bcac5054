"""The MLflow client as the registry's modules call it: each call named for what it does, and an
MLflow failure a RegistryError that says which store failed to do what.

wms.registry builds the registry on it (`MlflowRegistry.mlflow`); wms.registry_prune (deleting
versions and model files), wms.registry_stale (marking dead runs KILLED) and wms.forget_runs
(deleting a forgotten photo's drawings) use it there for what they do beside the registry's
interface.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wms.errors import RegistryError


class MlflowCalls:
    """An MLflow store (a database or a tracking server) opened at `uri`."""

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        try:
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        except Exception as exc:  # the store is opened here: any failure is the setting's (or its file's)
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RegistryError(
                f"tracking.uri {uri} cannot be opened as an MLflow store: {why}; set tracking.uri to "
                "an MLflow database (sqlite:///.wms/mlflow.db) or server (http://HOST:5000)"
            ) from None

    def call(self, what: str, fn: Any, *args: Any, absent_ok: bool = False, **kwargs: Any) -> Any:
        """fn(...), an MLflow failure a RegistryError; with `absent_ok`, None where MLflow answers
        that there is no such model, version or alias. A server that cannot be reached always
        raises: it is never "nothing in production", so the gate never judges against no baseline."""
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            if absent_ok and exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None  # the latter is MLflow's answer for a missing alias
            raise RegistryError(f"MLflow at {self.uri} failed to {what}: {exc.message}") from None

    def run(self, run_id: str, absent_ok: bool = False) -> Any:
        """The run `run_id`; with `absent_ok`, None where it is gone."""
        return self.call("read the run", self.client.get_run, run_id, absent_ok=absent_ok)

    def runs(self, ids: list[str], where: str = "", deleted: bool = False) -> Iterator[Any]:
        """Every active run of the experiments `ids` that the filter `where` matches, page by page;
        with `deleted`, the runs deleted but not yet garbage-collected (`mlflow gc`) too."""
        from mlflow.entities import ViewType

        view = ViewType.ALL if deleted else ViewType.ACTIVE_ONLY
        token = None
        while True:
            search = self.client.search_runs
            page = self.call("search runs", search, ids, where, view, max_results=1000, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.call("set a tag", self.client.set_tag, run_id, key, value)

    def delete_tag(self, run_id: str, key: str) -> None:
        self.call("drop a tag", self.client.delete_tag, run_id, key)

    def end_run(self, run_id: str, status: str, end_time: int | None = None) -> None:
        """Set the run's status (FINISHED, FAILED, KILLED) and end time (ms; None: now)."""
        self.call("end a run", self.client.set_terminated, run_id, status, end_time)

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        """Every value the run logged for the metric `key`, with its time."""
        return list(self.call("read a metric", self.client.get_metric_history, run_id, key))

    def list_artifacts(self, run_id: str, path: str) -> list[Any]:
        """The files and folders directly under the run's artifact folder `path`."""
        return list(self.call("list artifacts", self.client.list_artifacts, run_id, path))

    def delete_artifacts(
        self, run_id: str, artifact_uri: str, path: str, moved: Path | None, then: str
    ) -> None:
        """Delete the file or folder `path` of the run whose artifacts are at `artifact_uri`:
        in `moved`, the run's folder where the project moved (wms.registry_local), or through
        MLflow's artifact repository (a folder, S3, a tracking server with proxied artifacts).
        A failure (HTTP, S3, file) is a RegistryError that ends with `then`, what is left to do."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        if moved is not None:
            if (moved / path).is_dir():
                shutil.rmtree(moved / path, ignore_errors=True)
            else:
                (moved / path).unlink(missing_ok=True)
            return
        try:
            get_artifact_repository(artifact_uri, tracking_uri=self.uri).delete_artifacts(path)
        except Exception as exc:  # an HTTP, S3 or file error
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RegistryError(
                f"MLflow at {self.uri} failed to delete {path} of run {run_id}: {why}; {then}"
            ) from None

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str) -> None:
        """Copy the files of `local_dir` into the run's artifact folder `artifact_path`."""
        self.call("log artifacts", self.client.log_artifacts, run_id, str(local_dir), artifact_path)

    def experiments(self) -> list[Any]:
        """Every active experiment."""
        return list(self.call("read experiments", self.client.search_experiments))

    def experiment(self, name: str) -> Any:
        """The experiment `name`, or None."""
        return self.call("read experiments", self.client.get_experiment_by_name, name)

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self.call("set a tag", self.client.set_experiment_tag, experiment_id, key, value)

    def registered_model(self, name: str) -> Any:
        """The registered model `name`, or None before its first version."""
        return self.call("read the registered model", self.client.get_registered_model, name, absent_ok=True)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point `alias` of the registered model `name` at `version`."""
        self.call("set an alias", self.client.set_registered_model_alias, name, alias, version)

    def versions(self, name: str) -> list[Any]:
        """Every version of the registered model `name` (search results carry no aliases)."""
        return list(self.call("list versions", self.client.search_model_versions, f"name='{name}'"))

    def delete_version(self, name: str, number: str) -> None:
        """Delete version `number` of `name`; MLflow never gives its number again."""
        self.call("delete a model version", self.client.delete_model_version, name, number)
