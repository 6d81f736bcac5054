"""A run being written to MLflow: params, per-epoch metrics, tags, artifacts and the model.

The model folder becomes the run's `model/` artifact: with an ONNX export, an MLflow model
(MLmodel beside model.pt, model.json and model.onnx) that `mlflow.pyfunc` loads through
wms.mlflow_model. `wms.registry` opens runs; this module writes into one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wms.train.spec import ONNX_FILE, SPEC_FILE

MODEL_ARTIFACT = "model"


class MlflowRunLog:
    """A run in progress, written through the MLflow client."""

    def __init__(self, client: Any, run_id: str, pyfunc_config: dict[str, Any] | None = None) -> None:
        self._client, self.run_id = client, run_id
        self._pyfunc_config = pyfunc_config or {}

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self._client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(datetime.now(UTC).timestamp() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self._client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._client.set_tag(self.run_id, key, value)

    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None:
        self._client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_model(self, local_dir: Path) -> None:
        """The saved model folder as the run's `model/`: with an ONNX export, an MLflow model."""
        if not ((local_dir / ONNX_FILE).is_file() and (local_dir / SPEC_FILE).is_file()):
            self._client.log_artifacts(self.run_id, str(local_dir), MODEL_ARTIFACT)
            return
        from wms.data.hashes import sha256_file

        config = self._pyfunc_config | {"onnx_sha256": sha256_file(local_dir / ONNX_FILE)}
        size = sum(p.stat().st_size for p in local_dir.rglob("*") if p.is_file())
        with pyfunc_files(config, self.run_id, size) as mlflow_files:  # written before anything is sent
            self._client.log_artifacts(self.run_id, str(local_dir), MODEL_ARTIFACT)
            self._client.log_artifacts(self.run_id, str(mlflow_files), MODEL_ARTIFACT)


@contextmanager
def pyfunc_files(config: dict[str, Any], run_id: str, model_bytes: int) -> Iterator[Path]:
    """MLmodel and the files it names, in a temporary folder, to log beside a model's files."""
    from wms.mlflow_model import write_pyfunc

    with tempfile.TemporaryDirectory(prefix="wms-mlmodel-") as tmp:
        write_pyfunc(Path(tmp) / "mlflow", config, run_id, model_bytes)
        yield Path(tmp) / "mlflow"
