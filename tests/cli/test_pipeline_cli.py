"""`wms pipeline run` / `resume` as CI meets them: a failed stage, its run id in $GITHUB_OUTPUT, resume."""

from __future__ import annotations

import json
import shutil
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
    (line,) = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert line.endswith(f"; continue with `wms pipeline resume {values['run_id']}`")  # names the run
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


def ledger_path(project_dir: Path, sha: str) -> Path:
    return project_dir / ".wms" / "store" / "batches" / f"{sha}.json"


def write_record(project_dir: Path, sha: str, **fields: str) -> dict[str, str]:
    record = {"branch": "data/20260102-030405", "sha": sha, **fields}
    path = ledger_path(project_dir, sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return record


def test_a_ci_run_of_a_batch_finished_meanwhile_does_not_train_it_again(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    sha = "ab" * 20
    done = write_record(project_dir, sha, status="published", run_id="20990101-000000-sweep1", summary="x")
    batch = make_batch("b", count=30)

    result = cli(
        "--set",
        "train.epochs=0",
        "pipeline",
        "run",
        "-d",
        batch,
        "--branch",
        "data/20260102-030405",
        "--sha",
        sha,
    )
    assert result.exit_code == 0, result.output
    assert "was finished meanwhile by run 20990101-000000-sweep1: published" in result.stdout
    assert "▶ train" not in result.stdout
    assert json.loads(ledger_path(project_dir, sha).read_text()) == done  # its record is left as it was


def test_resume_refuses_a_run_whose_batch_another_run_finished_or_took_on(
    cli: Callable[..., Any],
    project_dir: Path,
    make_batch: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sha = "cd" * 20
    monkeypatch.setenv("WMS_FAULT_STAGE", "merge")
    args = (
        "pipeline",
        "run",
        "-d",
        make_batch("b", count=30),
        "--branch",
        "data/20260102-030405",
        "--sha",
        sha,
    )
    failed = cli("--set", "train.epochs=0", *args)
    assert failed.exit_code == 1
    run_id = json.loads(ledger_path(project_dir, sha).read_text())["run_id"]
    monkeypatch.delenv("WMS_FAULT_STAGE")

    # The sweeper ran the batch again meanwhile and published it.
    done = write_record(project_dir, sha, status="published", run_id="20990101-000000-sweep1", summary="x")
    resumed = cli("--set", "train.epochs=0", "pipeline", "resume", run_id)
    assert resumed.exit_code == 2, resumed.output
    assert "was finished by run 20990101-000000-sweep1: published" in resumed.stderr
    assert "Traceback" not in resumed.output and "▶" not in resumed.stdout
    assert json.loads(ledger_path(project_dir, sha).read_text()) == done

    # Or another run is at it (or failed too): that run, not this one, goes on with the batch.
    other = write_record(project_dir, sha, status="failed", run_id="20990101-000000-sweep2", summary="x")
    resumed = cli("--set", "train.epochs=0", "pipeline", "resume", run_id)
    assert resumed.exit_code == 2, resumed.output
    assert "run 20990101-000000-sweep2 took it on since (failed)" in resumed.stderr
    assert json.loads(ledger_path(project_dir, sha).read_text()) == other


def test_a_batch_rejected_by_validation_names_its_files_on_the_summary_page(
    cli: Callable[..., Any],
    project_dir: Path,
    make_batch: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On GitHub the labeller reads the run's Summary page; the report the error line points at
    stays on the runner. A photo already stored, pushed again under a new name, passes the
    workflow's check of the batch alone and is caught only when merged."""
    stored = make_batch("stored", count=30, seed=1)
    assert cli("data", "ingest", stored).exit_code == 0
    batch = make_batch("b", count=4, seed=2)
    again = next((stored / "images").iterdir())
    shutil.copy(again, batch / "images" / f"again{again.suffix}")
    shutil.copy(stored / "masks" / again.name, batch / "masks" / f"again{again.suffix}")
    summary = tmp_path / "summary"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    rejected = cli("--set", "train.epochs=0", "pipeline", "run", "--new-data", batch)

    assert rejected.exit_code == 1, rejected.output
    page = summary.read_text()
    assert "| validate | failed |" in page
    assert f"images/again{again.suffix}" in page and "duplicate" in page


def test_a_train_setting_the_network_cannot_take_stops_the_run_before_anything_is_recorded(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    """It was found at the train stage, after the merge, validation and the start of compute, and
    left a failed run and a stored dataset version behind; now it is the line `wms train` gives."""
    batch = make_batch("b", count=30)
    ran = cli("--set", "train.image_size=30", "pipeline", "run", "-d", batch)
    trained = cli("--set", "train.image_size=30", "train", batch)
    assert ran.exit_code == trained.exit_code == 2
    line = "error: train.image_size=30 must be divisible by 4 (2**train.depth); use e.g. 28 or 32\n"
    assert ran.stderr == trained.stderr == line
    assert "▶" not in ran.stdout  # no stage ran
    assert not (project_dir / ".wms" / "runs").exists()
    assert not list((project_dir / ".wms" / "store").glob("versions/*"))


def test_a_model_without_its_onnx_export_is_refused_before_it_trains(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    """The gate judges the ONNX export the service runs: with train.export_onnx = false the run
    trained to the end and failed at its gate; now it stops before anything is recorded."""
    ran = cli(
        "--set", "train.export_onnx=false", "--set", "train.epochs=0", "pipeline", "run", "-d", make_batch()
    )
    assert ran.exit_code == 2, ran.output
    assert "train.export_onnx = false" in ran.stderr and len(ran.stderr.strip().splitlines()) == 1
    assert "▶" not in ran.stdout and not (project_dir / ".wms" / "runs").exists()
