"""`wms model promote` and `rollback` when MLflow fails half-way through moving the aliases."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.test_registry import logged_run

from wms.config import load_settings
from wms.production import read_history
from wms.registry import MlflowRegistry


@pytest.fixture
def registry(project_dir: Path, tracking: str) -> MlflowRegistry:
    return MlflowRegistry(load_settings(start=project_dir))


def fail_production_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow sets `previous`, then fails to set `production` (a server that went away between them)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    real = MlflowClient.set_registered_model_alias

    def half_way(self: Any, name: str, alias: str, version: str) -> None:
        if alias == "production":
            monkeypatch.setattr(MlflowClient, "set_registered_model_alias", real)  # fails once
            raise MlflowException("API request failed with error code 503 != 200")
        real(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", half_way)


def aliases(registry: MlflowRegistry) -> dict[str, list[str]]:
    return {r.version: r.aliases for r in registry.list()}


def test_a_promotion_the_registry_did_not_follow_is_finished_by_running_it_again(
    cli: Callable[..., Any],
    registry: MlflowRegistry,
    project_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for dice in (0.7, 0.8):
        registry.register(logged_run(registry, tmp_path, dice), {})
    assert cli("model", "promote", "1", "-r", "first").exit_code == 0
    fail_production_alias(monkeypatch)
    failed = cli("model", "promote", "2", "-r", "better")
    assert failed.exit_code == 1
    assert "the move is written, but the registry did not follow it" in failed.output
    assert "`wms model reconcile` (or this command again)" in failed.output
    assert aliases(registry)["2"] == []  # production_current.json names 2; the alias does not yet

    again = cli("model", "promote", "2", "-r", "better")
    assert again.exit_code == 0, again.output
    assert "production moved to version 2 (was 1)" in again.output
    assert aliases(registry) == {"1": ["previous"], "2": ["production"]}
    assert [m["to_version"] for m in read_history(project_dir / "models")] == ["1", "2"]


def test_a_rollback_run_again_after_a_failure_does_not_step_back_twice(
    cli: Callable[..., Any],
    registry: MlflowRegistry,
    project_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for dice in (0.7, 0.8, 0.9):
        version = registry.register(logged_run(registry, tmp_path, dice), {}).version
        assert cli("model", "promote", version, "-r", "better").exit_code == 0
    fail_production_alias(monkeypatch)
    assert cli("model", "rollback").exit_code == 1  # 3 → 2 written, the alias still on 3

    again = cli("model", "rollback")
    assert again.exit_code == 0, again.output
    assert "run `wms model rollback` again to step back from it" in again.output
    assert aliases(registry)["2"] == ["production"]  # not version 1
    assert [m["to_version"] for m in read_history(project_dir / "models")] == ["1", "2", "3", "2"]


def restored_older(cli: Callable[..., Any], project_dir: Path, tmp_path: Path) -> MlflowRegistry:
    """Versions 1, 2, 3 promoted in turn; the MLflow database then restored from a copy taken
    before 3 was registered (a disk lost, the last backup older than the last promotion)."""
    import sqlite3

    registry = MlflowRegistry(load_settings(start=project_dir))
    database = project_dir / ".wms" / "mlflow.db"
    for dice in (0.7, 0.8, 0.9):
        if dice == 0.9:
            with sqlite3.connect(database) as live, sqlite3.connect(tmp_path / "backup.db") as copy:
                live.backup(copy)  # the last backup
        registry.register(logged_run(registry, tmp_path, dice), {})
        assert cli("model", "promote", str(len(registry.list())), "-r", "better").exit_code == 0
    with sqlite3.connect(tmp_path / "backup.db") as copy, sqlite3.connect(database) as live:
        copy.backup(live)  # the new node restores it
    return registry


def test_a_registry_restored_from_a_backup_older_than_the_last_promotion_says_what_to_do(
    cli: Callable[..., Any], project_dir: Path, tmp_path: Path
) -> None:
    registry = restored_older(cli, project_dir, tmp_path)
    lost = cli("model", "reconcile")
    assert lost.exit_code == 1
    line = " ".join(lost.output.split())
    assert "production_current.json names version 3, which the registry lacks (it has 1, 2)" in line
    assert "restored from a backup older than that promotion" in line
    reason = '--reason "registry restored from an older backup"'
    assert f"`wms model rollback {reason}` (back to version 2)" in line

    back = cli("model", "rollback", "--reason", "registry restored from an older backup")
    assert back.exit_code == 0, back.output
    after = cli("model", "reconcile")
    assert after.exit_code == 0 and "production is version 2, as main says" in after.output
    # The lost version is off the ledger's stack: a later rollback never steps back onto it.
    assert cli("model", "rollback").exit_code == 0
    assert registry.production() is not None and registry.production().version == "1"  # type: ignore[union-attr]


def test_a_restored_registry_that_numbered_another_model_as_mains_production_can_be_stepped_back(
    cli: Callable[..., Any], project_dir: Path, tmp_path: Path
) -> None:
    registry = restored_older(cli, project_dir, tmp_path)
    registry.register(logged_run(registry, tmp_path, 0.5), {})  # a candidate takes the number 3 again

    mismatch = cli("model", "reconcile")
    assert mismatch.exit_code == 1
    line = " ".join(mismatch.output.split())
    assert "names version 3 with model sha256" in line and "docs/recovery.md" in line
    back = cli("model", "rollback", "--reason", "registry restored from an older backup")
    assert back.exit_code == 0, back.output
    assert registry.production() is not None and registry.production().version == "2"  # type: ignore[union-attr]
