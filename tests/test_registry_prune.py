"""`wms model prune`: the model files of candidates that never served go; their runs' record stays."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Ec2Box

from wms.compute.ec2 import Ec2Compute
from wms.config import ComputeSettings, load_settings
from wms.data.hashes import sha256_file
from wms.errors import ModelPruned, RegistryError
from wms.production import record_move
from wms.registry import MlflowRegistry
from wms.registry_mlflow import MlflowCalls
from wms.registry_prune import LAST_PRUNE_TAG, PRUNED_TAG

DAY_MS = 86_400_000
WEIGHTS = 1_000_000  # bytes of model.pt: a model of the cpu recipe is about 20 MB, the gpu one's 62 MB


@pytest.fixture
def registry(project_dir: Path, tracking: str) -> MlflowRegistry:
    return MlflowRegistry(load_settings(start=project_dir))


# The embedded SQLite MLflow (files in the project) and a real `mlflow server` (proxied files).
both = pytest.mark.parametrize("tracking", ["sqlite", "server"], indirect=True)


def trained(registry: MlflowRegistry, tmp_path: Path, days_ago: int, gate: str | None = "fail") -> str:
    """A run trained `days_ago` days ago with a model and a gate report, registered unless `gate` is None."""
    client = registry._client
    started = int(time.time() * 1000) - days_ago * DAY_MS
    run_id = client.create_run(registry._experiment_id(), start_time=started, run_name="train").info.run_id
    model = tmp_path / run_id / "model"
    model.mkdir(parents=True)
    (model / "model.pt").write_bytes(run_id.encode() * (WEIGHTS // 32))
    (model / "model.json").write_text("{}")
    (tmp_path / run_id / "gate").mkdir()
    (tmp_path / run_id / "gate" / "report.md").write_text(f"# gate: {gate}\n")
    client.log_artifacts(run_id, str(model), "model")
    client.log_artifacts(run_id, str(tmp_path / run_id / "gate"), "gate")
    client.log_metric(run_id, "test_dice", 0.8)
    client.log_param(run_id, "epochs", "12")
    client.set_tag(run_id, "wms.model_sha256", sha256_file(model / "model.pt"))
    client.set_terminated(run_id, "FINISHED", end_time=started + 60_000)
    if gate is None:
        return run_id
    return registry.register(run_id, {"gate": gate}).version


def model_files(registry: MlflowRegistry, run_id: str) -> list[str]:
    return [f.path for f in registry._client.list_artifacts(run_id, "model")]


@both
def test_prune_deletes_only_old_models_that_never_served_and_keeps_their_runs(
    cli: Callable[..., Any], registry: MlflowRegistry, project_dir: Path, tmp_path: Path
) -> None:
    pointers = project_dir / "models"
    served_long_ago = trained(registry, tmp_path, 200, gate="pass")
    previous = trained(registry, tmp_path, 150, gate="pass")
    production = trained(registry, tmp_path, 120, gate="pass")
    record_move(pointers, {"to_version": served_long_ago, "from_version": None, "action": "promote"})
    for old, new in ((served_long_ago, previous), (previous, production)):
        record_move(pointers, {"to_version": new, "from_version": old, "action": "promote"})
        registry.promote(new)
    lost = trained(registry, tmp_path, 100)
    passed_waiting = trained(registry, tmp_path, 95, gate="pass")  # its pull request not merged yet
    recent = trained(registry, tmp_path, 5)
    unregistered = trained(registry, tmp_path, 90, gate=None)  # `wms train` by hand, or a gate that refused
    lost_run = registry.get(lost).run_id
    kept = (served_long_ago, previous, production, passed_waiting, recent)

    looked = cli("model", "prune", "--older-than", "30", "--dry-run")
    assert looked.exit_code == 0, looked.output
    lines = looked.output.splitlines()
    assert lines[0].startswith(f"run {lost_run[:8]} (version {lost}, trained ")
    assert lines[1].startswith(f"run {unregistered[:8]} (not registered, trained ")
    assert lines[-1].startswith("would free 2.0 MB from 2 run(s) trained before ")
    assert "kept the 3 version(s) that ever served" in lines[-1]
    assert model_files(registry, lost_run) and registry.get(lost)  # a dry run deletes nothing

    pruned = cli("model", "prune", "--older-than", "30")
    assert pruned.exit_code == 0, pruned.output
    assert pruned.output.splitlines()[-1].startswith("freed 2.0 MB from 2 run(s)")
    listed = cli("model", "list")
    assert lost not in [line.split()[0] for line in listed.output.splitlines()[2:]]
    assert cli("model", "show", lost).exit_code == 2  # it can no longer be promoted by mistake
    for run_id in (lost_run, unregistered):
        assert model_files(registry, run_id) == []
        run = registry._client.get_run(run_id)
        assert run.data.metrics["test_dice"] == 0.8 and run.data.params["epochs"] == "12"
        assert [f.path for f in registry._client.list_artifacts(run_id, "gate")] == ["gate/report.md"]
    assert f"was version {lost}" in registry._client.get_run(lost_run).data.tags[PRUNED_TAG]
    for version in kept:
        with registry.fetched(version) as folder:
            assert (folder / "model.pt").stat().st_size > WEIGHTS - 32
    if registry.uri.startswith("sqlite"):
        assert not (project_dir / ".wms" / "mlartifacts" / lost_run / "artifacts" / "model").exists()

    again = cli("model", "prune", "--older-than", "30")
    assert again.output.splitlines() == [again.output.splitlines()[-1]]
    assert again.output.startswith("freed 0.0 MB from 0 run(s)")


@both
def test_a_production_ledger_that_cannot_be_read_stops_the_prune(
    cli: Callable[..., Any], registry: MlflowRegistry, project_dir: Path, tmp_path: Path
) -> None:
    lost = trained(registry, tmp_path, 100)
    (project_dir / "models").mkdir()
    (project_dir / "models" / "production_history.jsonl").write_text("<<<<<<< HEAD\n")
    result = cli("model", "prune", "--older-than", "30")
    assert result.exit_code == 1
    assert "production_history.jsonl line 1 is not a recorded move" in result.output
    assert model_files(registry, registry.get(lost).run_id)


def test_older_than_less_than_a_day_is_refused(cli: Callable[..., Any], project_dir: Path) -> None:
    result = cli("model", "prune", "--older-than", "0")
    assert result.exit_code == 2
    assert "--older-than" in result.output


def test_a_moved_project_prunes_the_files_in_its_new_folder(
    cli: Callable[..., Any], project_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded MLflow records full paths: after `mv project moved` they name a folder that is gone."""
    registry = MlflowRegistry(load_settings(start=project_dir))
    lost_run = registry.get(trained(registry, tmp_path, 100)).run_id
    there = tmp_path / "moved"
    project_dir.rename(there)
    monkeypatch.chdir(there)

    pruned = cli("model", "prune", "--older-than", "30")
    assert pruned.exit_code == 0, pruned.output
    assert pruned.output.splitlines()[-1].startswith("freed 1.0 MB from 1 run(s)")
    run_folder = there / ".wms" / "mlartifacts" / lost_run / "artifacts"
    assert not (run_folder / "model").exists() and (run_folder / "gate" / "report.md").is_file()
    assert not project_dir.exists()  # nothing re-created where the project was


@both
def test_a_pruned_model_asked_for_says_when_prune_deleted_it_and_what_to_do(
    cli: Callable[..., Any], registry: MlflowRegistry, tmp_path: Path
) -> None:
    """`wms pipeline resume` of an old run, `wms model download`, `show` or `deploy --model N`."""
    lost = trained(registry, tmp_path, 100)
    lost_run = registry.get(lost).run_id
    trained(registry, tmp_path, 1)  # a later version: MLflow never gives the pruned number again
    assert cli("model", "prune", "--older-than", "30").exit_code == 0
    today = datetime.now(UTC).date().isoformat()

    for asked in (("download", lost_run, str(tmp_path / "out")), ("download", lost, "out"), ("show", lost)):
        result = cli("model", *asked)
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert f"deleted by `wms model prune` on {today}" in line, line
        assert "train again" in line and "`wms model list`" in line
        assert "Traceback" not in result.output and "failed to download" not in line
    gone = f"run {lost_run[:8]}.* deleted by `wms model prune`"
    with pytest.raises(ModelPruned, match=gone), registry.fetched(lost_run):  # a resumed run's gate
        pass


def test_without_older_than_the_setting_decides_and_the_step_summary_says_what_was_freed(
    cli: Callable[..., Any], project_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daily job runs plain `wms model prune`: tracking.prune_after_days (0: off) sets the age."""
    registry = MlflowRegistry(load_settings(start=project_dir))
    lost_run = registry.get(trained(registry, tmp_path, 100)).run_id
    older_run = registry.get(trained(registry, tmp_path, 200)).run_id
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    default = cli("model", "prune")  # 180 days
    assert default.exit_code == 0, default.output
    assert default.output.splitlines()[-1].startswith("freed 1.0 MB from 1 run(s)")
    assert model_files(registry, lost_run) and not model_files(registry, older_run)

    monkeypatch.setenv("WMS_TRACKING__PRUNE_AFTER_DAYS", "0")
    off = cli("model", "prune")
    assert off.exit_code == 0, off.output
    assert off.output.strip() == (
        "tracking.prune_after_days is 0: nothing pruned (set it, or pass --older-than DAYS)"
    )
    assert model_files(registry, lost_run)

    monkeypatch.setenv("WMS_TRACKING__PRUNE_AFTER_DAYS", "30")
    assert cli("model", "prune").output.splitlines()[-1].startswith("freed 1.0 MB from 1 run(s)")
    assert not model_files(registry, lost_run)
    written = summary.read_text()
    assert written.count("### Model files pruned") == 3
    assert f"- run {older_run[:8]} (version 2, trained " in written
    assert "tracking.prune_after_days is 0: nothing pruned" in written
    assert f"- run {lost_run[:8]} (version 1, trained " in written and written.endswith("): 1.0 MB\n")


def test_once_a_day_prunes_only_when_the_last_prune_finished_20_hours_ago_or_more(
    cli: Callable[..., Any], project_dir: Path, tmp_path: Path
) -> None:
    """single: every job on the GPU instance ends with `wms model prune --once-a-day`, which
    prunes on the first of a day's batches and leaves the others at once; MLflow records when."""
    registry = MlflowRegistry(load_settings(start=project_dir))
    first_run = registry.get(trained(registry, tmp_path, 200)).run_id
    assert cli("model", "prune", "--dry-run").exit_code == 0  # a dry run is no prune

    first = cli("model", "prune", "--once-a-day")
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[-1].startswith("freed 1.0 MB from 1 run(s)")
    assert not model_files(registry, first_run)

    later_run = registry.get(trained(registry, tmp_path, 190)).run_id  # restored from a backup, say
    skipped = cli("model", "prune", "--once-a-day")
    assert skipped.exit_code == 0, skipped.output
    (line,) = skipped.output.strip().splitlines()
    assert "last pruned" in line and "less than 20 hours ago: nothing to do" in line, line
    assert model_files(registry, later_run)

    experiment = registry._experiment_id()
    day_ago = (datetime.now(UTC) - timedelta(hours=21)).isoformat(timespec="seconds")
    registry._client.set_experiment_tag(experiment, LAST_PRUNE_TAG, day_ago)
    again = cli("model", "prune", "--once-a-day")
    assert again.output.splitlines()[-1].startswith("freed 1.0 MB from 1 run(s)"), again.output
    assert not model_files(registry, later_run)
    assert cli("model", "prune", "--once-a-day").output.startswith("last pruned")

    registry._client.set_experiment_tag(experiment, LAST_PRUNE_TAG, "not a time")  # edited by hand
    assert cli("model", "prune", "--once-a-day").output.startswith("freed 0.0 MB from 0 run(s)")


def test_on_the_gpu_instance_the_prune_holds_its_runs_lease_as_the_pipeline_did(
    cli: Callable[..., Any],
    project_dir: Path,
    tmp_path: Path,
    ec2_box: Ec2Box,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """single: the prune step follows `wms pipeline run`, whose last renewal left the run one
    compute.lease_minutes; the prune renews it as it runs and ends, so neither the reaper nor the
    lease guard stops the instance under it, and the deploy and stop jobs after it get a whole lease."""
    for name, value in {
        "WMS_COMPUTE__BACKEND": "ec2",
        "WMS_COMPUTE__TRAIN_ON": "here",
        "WMS_COMPUTE__INSTANCE_ID": ec2_box.id,
        "GITHUB_RUN_ID": "7",
    }.items():
        monkeypatch.setenv(name, value)
    ec2_box.client.start_instances(InstanceIds=[ec2_box.id])
    almost_out = ComputeSettings(backend="ec2", instance_id=ec2_box.id, lease_minutes=0.5)
    Ec2Compute(almost_out, holder="gh-run-7").renew_lease()
    registry = MlflowRegistry(load_settings(start=project_dir))
    trained(registry, tmp_path, 200)

    pruned = cli("model", "prune", "--once-a-day")
    assert pruned.exit_code == 0, pruned.output
    expires = datetime.fromisoformat(ec2_box.tags()["wms:lease:gh-run-7"])
    assert expires - datetime.now(UTC) > timedelta(minutes=55)  # compute.lease_minutes: 60


def test_run_files_are_deleted_in_a_moved_folder_and_a_store_that_fails_names_run_and_remedy(
    tmp_path: Path,
) -> None:
    """The one deletion `wms model prune` and `wms data forget` share (MlflowCalls.delete_artifacts)."""
    calls = MlflowCalls(f"sqlite:///{tmp_path / 'mlflow.db'}")
    moved = tmp_path / "run" / "artifacts"
    (moved / "model").mkdir(parents=True)
    (moved / "model" / "model.pt").write_bytes(b"weights")
    (moved / "worst").mkdir()
    (moved / "worst" / "00-a.jpg").write_bytes(b"jpeg")
    for path in ("model", "worst/00-a.jpg", "worst/00-a.jpg"):  # a folder, a file, a file gone already
        calls.delete_artifacts("r1", "file:///old/place", path, moved, then="again")
    assert sorted(p.name for p in moved.rglob("*")) == ["worst"]

    # An artifact store that cannot delete: MLflow's FTP repository answers "Not implemented yet".
    with pytest.raises(RegistryError) as failed:
        calls.delete_artifacts("r1", "ftp://127.0.0.1:1/runs/r1", "model", None, then="run it again")
    line = str(failed.value)
    assert line.startswith("MLflow at sqlite:") and "failed to delete model of run r1: " in line
    assert line.endswith("; run it again") and "\n" not in line
