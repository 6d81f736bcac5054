"""Ctrl-C in a long command: one line saying what stopped, what is left and what to do; exit 130."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from wms.cli import _common, data_versions

MakeBatch = Callable[..., Path]


def test_ctrl_c_in_an_ingest_leaves_no_version_and_says_so(
    cli: Callable[..., Any], project_dir: Path, make_batch: MakeBatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextmanager
    def cut_short(description: str, total: int | None) -> Iterator[Any]:
        class Advance:
            def __call__(self, n: int = 1) -> None:
                if description.startswith("uploading"):
                    raise KeyboardInterrupt  # Ctrl-C with some blobs uploaded, the manifest not yet written

            def expect(self, total: int) -> None:
                pass

        yield Advance()

    monkeypatch.setattr(data_versions, "progress_bar", cut_short)
    batch = make_batch("a", count=6)
    result = cli("data", "ingest", batch)
    assert result.exit_code == 130
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("interrupted (SIGINT): ingest stopped before a new version was written")
    assert f"run `wms data ingest {batch}` again" in line
    assert not (project_dir / "data" / "dataset.json").exists()
    assert "no dataset versions yet" in cli("data", "versions").output
    monkeypatch.undo()
    monkeypatch.chdir(project_dir)
    again = cli("data", "ingest", batch)
    assert again.exit_code == 0, again.output
    assert "6 pairs added" in again.output


def test_ctrl_c_in_training_says_what_is_left_and_gives_the_cursor_back(
    cli: Callable[..., Any], project_dir: Path, make_batch: MakeBatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = io.StringIO()
    monkeypatch.setattr(_common, "err_console", Console(file=terminal, force_terminal=True, markup=False))

    def ctrl_c(self: _common.TrainProgress, loss: float | None) -> None:
        raise KeyboardInterrupt  # mid-epoch, while the bar is showing

    monkeypatch.setattr(_common.TrainProgress, "step_done", ctrl_c)
    result = cli("train", make_batch("b", count=12), "--epochs", "1")
    assert result.exit_code == 130
    shown = terminal.getvalue()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    assert "interrupted (SIGINT): training stopped; its MLflow run is marked FAILED" in text
    assert "--checkpoint FILE" in text
    assert shown.count("\x1b[?25l") == shown.count("\x1b[?25h") >= 1  # the hidden cursor is shown again
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project_dir / '.wms' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_ctrl_c_in_a_pipeline_names_the_run_to_resume(
    cli: Callable[..., Any], project_dir: Path, make_batch: MakeBatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WMS_FAULT_STAGE", "validate:SIGINT")
    result = cli("pipeline", "run", "--new-data", make_batch("c", count=12))
    assert result.exit_code == 130
    (run_dir,) = (project_dir / ".wms" / "runs").iterdir()
    line = result.output.strip().splitlines()[-1]
    assert line == (
        f"interrupted (SIGINT): run {run_dir.name} stopped and compute was released; "
        f"continue with `wms pipeline resume {run_dir.name}`"
    )
