"""A project moved to another folder, with the embedded MLflow (SQLite) that records full paths."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from wms.config import load_settings
from wms.registry import MlflowRegistry


@pytest.fixture
def moved(served_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The served project (version 1 in production), moved as `mv project moved` would."""
    there = tmp_path / "moved"
    served_project.rename(there)
    monkeypatch.chdir(there)
    return there


def test_a_moved_project_still_serves_its_models_and_keeps_new_runs_inside(
    moved: Path, served_project: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), "white").save(photo)
    # Before: "failed to download the model: Failed to download artifacts from path 'model'".
    downloaded = cli("model", "download", "production", tmp_path / "out")
    assert downloaded.exit_code == 0, downloaded.output
    assert list((tmp_path / "out").rglob("model.onnx"))
    predicted = cli("predict", photo, "--out", tmp_path / "masks")
    assert predicted.exit_code == 0, predicted.output
    assert (tmp_path / "masks" / "photo.png").is_file()

    # A new run's files go into the moved project, not into a re-created old folder.
    registry = MlflowRegistry(load_settings(start=moved))
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "note.txt").write_text("after the move")
    with registry.start_run("after the move", {}) as run:
        run.log_artifacts(tmp_path / "files", "notes")
    assert (moved / ".wms" / "mlartifacts" / run.run_id / "artifacts" / "notes" / "note.txt").is_file()
    assert not served_project.exists()
    assert [r.version for r in registry.list()] == ["1"]  # the registry kept its versions


def test_a_moved_project_without_its_artifacts_says_why_in_one_line(
    moved: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    shutil.rmtree(moved / ".wms" / "mlartifacts")
    result = cli("model", "download", "production", tmp_path / "out")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the files of run ")
    assert "which is gone" in lines[0] and f"copy the old project's artifacts folder to {moved}" in lines[0]


def test_migrate_after_a_move_adds_the_mlmodel_to_the_moved_project_not_to_the_old_folder(
    project_dir: Path,
    exported_model: Path,
    register_model: Callable[..., str],
    cli: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register_model(project_dir, exported_model, mlmodel=False)  # a version from before MLflow models
    there = tmp_path / "moved"
    project_dir.rename(there)
    monkeypatch.chdir(there)

    done = cli("model", "migrate")
    assert done.exit_code == 0, done.output
    assert "version 1 " in done.output and "MLmodel added" in done.output, done.output
    assert "changed 1 of 1 version(s): 1" in done.output
    downloaded = cli("model", "download", "production", tmp_path / "v1")
    assert downloaded.exit_code == 0 and (tmp_path / "v1" / "MLmodel").is_file(), downloaded.output

    # A gate report for a run trained before the move (`wms pipeline resume` after it) goes there too.
    registry = MlflowRegistry(load_settings(start=there))
    (tmp_path / "gate").mkdir()
    (tmp_path / "gate" / "gate.md").write_text("| metric |")
    run_id = registry.get("1").run_id
    registry.log_to_run(run_id, tmp_path / "gate", "gate", {"wms.gate": "pass"})
    assert (there / ".wms" / "mlartifacts" / run_id / "artifacts" / "gate" / "gate.md").is_file()
    assert not project_dir.exists()  # nothing written where the project used to be
