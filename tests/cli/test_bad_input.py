"""Bad input as a user gives it: one line saying what is wrong and what to do, no traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WMS_GATE__METRICS", "dice"),
        ("WMS_GIT__LABELS", "data,model-promotion"),
        ("WMS_GATE__MAX_REGRESSION", "iou=0.01"),
        ("WMS_TRAIN", "epochs=3"),
    ],
)
def test_env_list_not_json_is_one_line(
    cli: Callable[..., Any], project_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("WMS_GATE__FLOOR", "0.3")  # a good variable of the same section is not blamed
    monkeypatch.setenv(name, value)
    result = cli("data", "versions")
    assert result.exit_code == 2
    assert result.output.startswith(f"error: cannot read {name}={value!r}: ")
    assert "written as JSON" in result.output
    assert "Traceback" not in result.output and "SettingsError" not in result.output


@pytest.mark.parametrize("url", ["s3:/wms-data/store", "s3:wms-data"])
def test_store_url_missing_slashes_writes_nothing(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path], url: str
) -> None:
    result = cli("--set", f"store.url={url}", "data", "ingest", make_batch(count=8))
    assert result.exit_code == 2
    assert f"bad setting store.url={url!r}: neither a folder nor a URL" in result.output
    assert "write s3://bucket/prefix" in result.output
    assert not (project_dir / "s3:").exists()  # no local 'store' named like the bucket
    assert not (project_dir / "data" / "dataset.json").exists()


@pytest.mark.parametrize(
    ("key", "uri"),
    [
        ("tracking.uri", "htp://127.0.0.1:5000"),  # a typo of the scheme
        ("tracking.uri", "sqlite:/.wms/mlflow.db"),  # a slash short
        ("tracking.uri", "mlruns"),  # a folder: MLflow's file store, which it refuses
        ("compute.remote_tracking_uri", "10.0.0.5:5000"),  # no scheme
    ],
)
def test_tracking_uri_typo_is_one_line(
    cli: Callable[..., Any], project_dir: Path, key: str, uri: str
) -> None:
    result = cli("--set", f"{key}={uri}", "model", "list")
    assert result.exit_code == 2
    assert f"bad setting {key}={uri!r}: not an MLflow tracking URI" in result.output
    assert "write sqlite:///.wms/mlflow.db (a file here) or http://HOST:5000 (a server)" in result.output
