"""`wms pipeline run` / `resume` as CI meets them: a failed stage, its run id in $GITHUB_OUTPUT, resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def test_a_failed_run_names_its_stage_and_resumes_from_ci(
    cli: Callable[..., Any],
    project_dir: Path,
    make_batch: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    output, summary = tmp_path / "out", tmp_path / "summary"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("WMS_FAULT_STAGE", "promote")
    batch = make_batch("b", count=30)

    failed = cli("--set", "train.epochs=0", "pipeline", "run", "--new-data", batch)
    assert failed.exit_code == 1
    assert "error: fault injected at stage promote" in failed.stderr
    values = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert (values["status"], values["failed_stage"], values["promoted"]) == ("failed", "promote", "false")
    assert "| promote | failed |" in summary.read_text()
    assert "#### Quality gate" in summary.read_text() and "first model" in summary.read_text()

    monkeypatch.delenv("WMS_FAULT_STAGE")
    resumed = cli("pipeline", "resume", values["run_id"])
    assert resumed.exit_code == 0, resumed.output
    assert "promoted version 1" in resumed.stdout
    assert "compute: local held" in resumed.stdout
    assert "▶ train" not in resumed.stdout  # the model trained before the fault is the one promoted

    again = cli("pipeline", "resume", values["run_id"])
    assert again.exit_code == 2 and "nothing to resume" in again.stderr


def test_a_bad_fault_spec_is_a_usage_error(
    cli: Callable[..., Any], project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WMS_FAULT_STAGE", "trian")
    result = cli("pipeline", "run")
    assert result.exit_code == 2
    assert "WMS_FAULT_STAGE='trian'" in result.stderr and "merge, validate" in result.stderr
