"""Experiment tracking and the model registry, behind one small interface (wms.registry_api);
MLflow implements it here.

Nothing outside this module, wms.registry_mlflow (MLflow's calls, their failures translated),
wms.registry_runs (a run being written) and wms.mlflow_model (the pyfunc flavor MLflow loads)
imports mlflow. Runs hold params, per-epoch metrics and the saved model (artifact folder
`model/`, an MLflow model: MLmodel beside model.pt, model.json and model.onnx); a promoted run
becomes a registered model version, and the aliases `production` and `previous` say which
version serves. Every alias move is decided by
`models/production_current.json` on main (`wms.production` follows it).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wms.compute.probes import server_answers
from wms.config import Project
from wms.errors import ModelNotFound, ModelPruned, RegistryError
from wms.registry_api import CONTINUED_TAG, KILLED_TAG, PRUNED_TAG, PRUNED_VERSIONS, pruned_message
from wms.registry_api import PREVIOUS as PREVIOUS
from wms.registry_api import PRODUCTION as PRODUCTION
from wms.registry_api import ModelRecord as ModelRecord
from wms.registry_api import Registry as Registry
from wms.registry_api import RunLog as RunLog
from wms.registry_local import artifact_root, elsewhere, moved_run_folder
from wms.registry_mlflow import MlflowCalls
from wms.registry_runs import MODEL_ARTIFACT, MlflowRunLog, pyfunc_files
from wms.train.spec import ONNX_FILE, SPEC_FILE, verify_model_folder

MLMODEL = "MLmodel"
RUN_ID = re.compile(r"[0-9a-f]{32}")
MAX_VERSION = 2**31 - 1


@dataclass(frozen=True)
class Migration:
    """What `MlflowRegistry.migrate` did to one version's folder."""

    version: str
    run_id: str
    change: str  # "added", "would add", "already" (an MLflow model) or "no onnx" (left as is)


def _quiet_mlflow() -> None:
    # MLflow and its database migrations log at INFO on first use; users need none of it.
    # Importing mlflow sets its loggers' levels, so this runs after that import.
    import mlflow  # noqa: F401

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # With a tracking server, MLflow writes "🏃 View run … / 🧪 View experiment …" to stdout
    # whenever a run ends, between WMS's own lines; WMS says where to see the run itself.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


class MlflowRegistry:
    """The registry on MLflow: a SQLite file by default, or any tracking server."""

    def __init__(self, project: Project) -> None:
        _quiet_mlflow()
        self.project = project
        self.uri = project.tracking_uri
        self.model_name = project.settings.tracking.model_name
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        elif self.uri.startswith(("http://", "https://")) and not server_answers(self.uri):
            # Said now, in seconds: MLflow's own retries would take about 4 minutes to fail.
            raise RegistryError(
                f"MLflow at {self.uri} does not answer; check tracking.uri and that the server runs "
                "(`wms compute status` shows the instance's MLflow URL)"
            )
        self.mlflow = MlflowCalls(self.uri)  # MLflow's calls, each failure a RegistryError
        self._client = self.mlflow.client

    def _pyfunc_config(self) -> dict[str, Any]:
        # The MLflow model enforces the limits `wms serve` enforces.
        serve = self.project.settings.serve
        return {"max_pixels": serve.max_pixels, "intra_op_threads": serve.intra_op_threads}

    def where_to_look(self, run_id: str | None = None) -> str:
        """How a person sees the runs (or `run_id`): the server's page, or `mlflow ui` on the database."""
        if self.uri.startswith(("http://", "https://")):
            base = self.uri.rstrip("/")
            if run_id is None:
                return base
            try:
                run = self.mlflow.run(run_id)
            except RegistryError:  # the run is trained and logged: a link is not worth failing for
                return base
            return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
        return f"mlflow ui --backend-store-uri {self.uri}"

    def _experiment_id(self) -> str:
        name = self.project.settings.tracking.experiment
        experiment = self.mlflow.experiment(name)
        root = artifact_root(self.project, self.uri)
        if experiment is not None:
            old = root and elsewhere(experiment.artifact_location, root)
            if not old:
                return str(experiment.experiment_id)
            # The project moved (or tracking.artifact_root changed). MLflow cannot move an
            # experiment, and its new runs would write their files into the old folder: the old
            # experiment keeps its runs under another name, and a new one is made here.
            renamed = f"{name} (id {experiment.experiment_id}, artifacts in {old})"
            self.mlflow.call(
                "rename the experiment", self._client.rename_experiment, experiment.experiment_id, renamed
            )
        location = root.as_uri() if root else None
        return str(self.mlflow.call("create the experiment", self._client.create_experiment, name, location))

    @contextmanager
    def start_run(self, name: str, tags: dict[str, str], run_id: str | None = None) -> Iterator[MlflowRunLog]:
        """A run that ends FINISHED, or FAILED when the block raises.

        With `run_id`, that run goes on (a training job resumed from its checkpoint after its
        instance was reclaimed), so its epochs stay in one run: RUNNING again, also after
        wms.registry_stale marked it KILLED meanwhile, with the time in `wms.continued_at`. A run
        marked KILLED while its process lived on (only silent: a laptop asleep) and ended it is not
        said to be killed: its own end drops the `wms.marked_killed` tag.
        """
        if run_id is None:
            run = self.mlflow.call(
                "start a run", self._client.create_run, self._experiment_id(), tags=tags, run_name=name
            )
            run_id = str(run.info.run_id)
        else:
            self.mlflow.call("continue a run", self._client.update_run, run_id, status="RUNNING")
            self._drop_killed_tag(run_id)
            tags = tags | {CONTINUED_TAG: datetime.now(UTC).isoformat(timespec="seconds")}
            for key, value in tags.items():
                self.mlflow.set_tag(run_id, key, value)
        status = "FAILED"
        try:
            yield MlflowRunLog(self._client, run_id, self._pyfunc_config())
            status = "FINISHED"
        finally:
            self._client.set_terminated(run_id, status)
            self._drop_killed_tag(run_id)

    def _drop_killed_tag(self, run_id: str) -> None:
        if KILLED_TAG in self.mlflow.run(run_id).data.tags:
            self.mlflow.delete_tag(run_id, KILLED_TAG)  # alive after all

    def log_to_run(self, run_id: str, local_dir: Path, artifact_path: str, tags: dict[str, str]) -> None:
        """Add files and tags to a finished run (the gate report goes to the candidate's run)."""
        if (moved := self._moved_run_folder(run_id)) is None:
            self.mlflow.log_artifacts(run_id, local_dir, artifact_path)
        else:  # the project moved: MLflow would write into (and re-create) the old folder
            shutil.copytree(local_dir, moved / artifact_path, dirs_exist_ok=True)
        for key, value in tags.items():
            self.mlflow.set_tag(run_id, key, value)

    def register(self, run_id: str, tags: dict[str, str]) -> ModelRecord:
        """Make the run's saved model a new version of the registered model.

        The version carries the run's `wms.*` tags (dataset version, git commit, model
        sha256, ...) without the prefix, plus `tags`, so it can be traced without the run.
        """
        if self.mlflow.registered_model(self.model_name) is None:
            self.mlflow.call(
                "create the registered model", self._client.create_registered_model, self.model_name
            )
        run = self.mlflow.run(run_id)
        source = f"{run.info.artifact_uri}/{MODEL_ARTIFACT}"
        traced = {k.removeprefix("wms."): v for k, v in run.data.tags.items() if k.startswith("wms.")}
        mv = self.mlflow.call(
            "register the model",
            self._client.create_model_version,
            self.model_name,
            source,
            run_id,
            tags={"run_id": run_id} | traced | tags,
        )
        return self._record(mv)

    def _record(self, mv: Any, aliases: list[str] | None = None) -> ModelRecord:
        # A version outlives its run (deleted in the UI, then `mlflow gc`): it is listed without metrics.
        run = mv.run_id and self.mlflow.run(mv.run_id, absent_ok=True)
        metrics, run_tags = (run.data.metrics, run.data.tags) if run else ({}, {})
        return ModelRecord(
            version=str(mv.version),
            run_id=mv.run_id or "",
            aliases=sorted(mv.aliases or []) if aliases is None else aliases,
            metrics={k: v for k, v in metrics.items() if k.startswith("test_")},
            tags=dict(mv.tags or {}),
            created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(
                timespec="seconds"
            ),
            run_tags={k: v for k, v in run_tags.items() if k.startswith("wms.")},
        )

    def get(self, ref: str) -> ModelRecord:
        """A version by alias (`production`), number (`3` or `v3`)."""
        number = ref.lstrip("v")
        get: Any  # MLflow's getter by version number, or by alias
        if number.isdigit():
            get, key = self._client.get_model_version, number
        else:
            get, key = self._client.get_model_version_by_alias, ref
        # MLflow numbers versions in 32 bits: asked for a larger one, a server fails (500) and
        # MLflow retries for about 4 minutes before saying so.
        beyond = number.isdigit() and int(number) > MAX_VERSION
        read = self.mlflow.call
        mv = None if beyond else read(f"read model {ref!r}", get, self.model_name, key, absent_ok=True)
        if mv is None and number.isdigit() and (note := self._pruned_version(number)) is not None:
            raise ModelPruned(pruned_message(f"version {number} (run {note[0][:8]})", note[1]))
        if mv is None:
            known = ", ".join(r.version for r in self.list()) or "none yet"
            versions = f"{self.model_name!r} (versions: {known})"
            raise ModelNotFound(f"no model {ref!r} in {versions}; see `wms model list`")
        return self._record(mv)

    def _pruned_version(self, number: str) -> tuple[str, str] | None:
        """The run whose version `number` `wms model prune` deleted, and its note; None if none did."""
        ids = [e.experiment_id for e in self.mlflow.experiments()]
        for run in self.mlflow.runs(ids, f"tags.`{PRUNED_TAG}` LIKE '%was version%'"):
            note = run.data.tags[PRUNED_TAG]
            named = PRUNED_VERSIONS.search(note)
            if named and number in named.group(1).replace(" ", "").split(","):
                return run.info.run_id, note
        return None

    def production(self) -> ModelRecord | None:
        """The version the `production` alias points at, if any."""
        try:
            return self.get(PRODUCTION)
        except ModelNotFound:
            return None

    def previous(self) -> ModelRecord | None:
        """The version `production` pointed at before the last move, if any."""
        try:
            return self.get(PREVIOUS)
        except ModelNotFound:
            return None

    def promote(self, version: str) -> ModelRecord | None:
        """Point `production` at `version` and `previous` at the old one; returns the old one."""
        old = self.production()
        if old is not None and old.version != version:
            self.mlflow.set_alias(self.model_name, PREVIOUS, old.version)
        self.mlflow.set_alias(self.model_name, PRODUCTION, version)
        return old

    def rollback(self) -> tuple[ModelRecord, ModelRecord]:
        """Swap `production` and `previous`; returns (the old production, the restored one)."""
        current, previous = self.production(), self.previous()
        if current is None or previous is None:
            raise RegistryError(
                "nothing to roll back to: "
                + ("no model is in production" if current is None else "no version is aliased 'previous'")
                + "; use `wms model promote VERSION` to choose one"
            )
        self.promote(previous.version)
        return current, self.get(PRODUCTION)

    def migrate(self, dry_run: bool = False) -> list[Migration]:
        """Make every version registered as bare files an MLflow model, oldest first.

        MLmodel and the files it names are added to the version's folder (its run's `model/`);
        model.pt, model.json and model.onnx stay as they are, so their recorded sha256 still
        hold. A version without model.onnx is left as is: the MLflow model runs the export.
        """
        changes: dict[str, str] = {}  # by run: versions registered from one run share a folder
        done = []
        for record in self.list():
            if record.run_id not in changes:
                changes[record.run_id] = self._migrate_run(record.run_id, dry_run)
            done.append(Migration(record.version, record.run_id, changes[record.run_id]))
        return done

    def _migrate_run(self, run_id: str, dry_run: bool) -> str:
        if (moved := self._moved_run_folder(run_id)) is not None:  # MLflow would list the old folder
            files = {p.name: p.stat().st_size for p in (moved / MODEL_ARTIFACT).iterdir() if p.is_file()}
        else:
            listed = self.mlflow.list_artifacts(run_id, MODEL_ARTIFACT)
            files = {Path(f.path).name: f.file_size or 0 for f in listed if not f.is_dir}
        if MLMODEL in files:
            return "already"
        if ONNX_FILE not in files or SPEC_FILE not in files:
            return "no onnx"
        if dry_run:
            return "would add"
        config = self._pyfunc_config()
        tags = self.mlflow.run(run_id).data.tags
        if "wms.onnx_sha256" in tags:
            config["onnx_sha256"] = tags["wms.onnx_sha256"]
        with pyfunc_files(config, run_id, sum(files.values())) as mlflow_files:
            self.log_to_run(run_id, mlflow_files, MODEL_ARTIFACT, {})
        return "added"

    def list(self) -> list[ModelRecord]:
        """All versions, oldest first."""
        model = self.mlflow.registered_model(self.model_name)
        if model is None:
            return []  # nothing registered yet
        aliases = dict(model.aliases or {})
        versions = self.mlflow.versions(self.model_name)
        # Search results carry no aliases, so take them from the registered model.
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        records = (self._record(mv, sorted(by_version.get(str(mv.version), []))) for mv in versions)
        return sorted(records, key=lambda r: int(r.version))

    def download(self, ref: str, dst: Path) -> Path:
        """Copy a model's saved folder (a registry ref or a run id) to `dst`; returns the folder.

        Its files are checked against the sha256 their run recorded at training: one that
        differs raises RegistryError, so no command scores, gates or serves a changed model.
        """
        run_id = ref if RUN_ID.fullmatch(ref) else self.get(ref).run_id
        run = self.mlflow.run(run_id, absent_ok=True)
        if run is not None and PRUNED_TAG in run.data.tags:
            raise ModelPruned(pruned_message(f"run {run_id[:8]}", run.data.tags[PRUNED_TAG]))
        dst.mkdir(parents=True, exist_ok=True)
        moved = self._moved_run_folder(run_id)
        if moved is None:
            path = self.mlflow.call(
                "download the model", self._client.download_artifacts, run_id, MODEL_ARTIFACT, str(dst)
            )
        else:  # the project moved: its database names the old folder (wms.registry_local)
            path = shutil.copytree(moved / MODEL_ARTIFACT, dst / MODEL_ARTIFACT, dirs_exist_ok=True)
        verify_model_folder(Path(path), self.recorded_hashes(run_id))
        return Path(path)

    def _moved_run_folder(self, run_id: str) -> Path | None:
        root = artifact_root(self.project, self.uri)
        if root is None:
            return None
        run = self.mlflow.run(run_id)
        return moved_run_folder(run.info.artifact_uri, run_id, root)

    def recorded_hashes(self, run_id: str) -> dict[str, str]:
        """The sha256 of the model files, as the run recorded them (`model_sha256`, ...)."""
        tags = self.mlflow.run(run_id).data.tags
        return {
            k.removeprefix("wms."): v
            for k, v in tags.items()
            if k.startswith("wms.") and k.endswith("_sha256")
        }

    @contextmanager
    def fetched(self, ref: str) -> Iterator[Path]:
        """A model folder in a temporary place, removed afterwards."""
        with tempfile.TemporaryDirectory(prefix="wms-model-") as tmp:
            yield self.download(ref, Path(tmp))
