"""A move of production by hand is a commit on main: the alias follows it, and a revert moves it back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from wms.config import load_settings
from wms.registry import MlflowRegistry

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo


def test_promote_rollback_and_revert_are_commits_that_production_follows(
    repo: Repo, cli: Callable[..., Any], exported_model: Path, register_model: Callable[..., str]
) -> None:
    v1 = register_model(repo.work, exported_model, promote=False)
    v2 = register_model(repo.work, exported_model, promote=False)
    registry = MlflowRegistry(load_settings())

    def production() -> str | None:
        record = registry.production()
        return record.version if record else None

    for version in (v1, v2):
        moved = cli("model", "promote", version, "--reason", f"reviewed {version}")
        assert moved.exit_code == 0, moved.output
        assert f"production moved to version {version}" in moved.output
    assert production() == v2
    assert repo.out("log", "-1", "--format=%s") == f"Production: version {v2} (promote: reviewed {v2})"

    rolled = cli("model", "rollback", "--reason", "v2 misreads dials")
    assert rolled.exit_code == 0, rolled.output
    assert production() == v1 and registry.previous().version == v2  # type: ignore[union-attr]
    assert "rollback" in repo.out("log", "-1", "--format=%s")
    assert repo.out("status", "--porcelain") == ""  # the move is committed, nothing left over

    repo.git("revert", "--no-edit", "HEAD")  # undo the rollback like any other commit
    followed = cli("model", "reconcile")
    assert followed.exit_code == 0, followed.output
    assert f"production moved to version {v2} (was {v1})" in followed.output
    assert production() == v2
    assert len(repo.out("show", "HEAD:models/production_history.jsonl").splitlines()) == 2


def test_on_a_branch_the_move_waits_for_main(
    repo: Repo, cli: Callable[..., Any], exported_model: Path, register_model: Callable[..., str]
) -> None:
    version = register_model(repo.work, exported_model, promote=False)
    repo.git("switch", "-q", "-c", "review")
    moved = cli("model", "promote", version, "--reason", "reviewed")
    assert moved.exit_code == 0, moved.output
    assert "production moves when this reaches main" in moved.output
    assert MlflowRegistry(load_settings()).production() is None


def test_inside_github_actions_the_move_goes_to_the_step_outputs_and_summary(
    repo: Repo,
    cli: Callable[..., Any],
    exported_model: Path,
    register_model: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v1 = register_model(repo.work, exported_model, promote=False)
    v2 = register_model(repo.work, exported_model, promote=False)
    for version in (v1, v2):
        assert cli("model", "promote", version, "--reason", "reviewed").exit_code == 0
    repo.git("revert", "--no-edit", "HEAD")  # main names v1 again; the release workflow reconciles
    outputs, summary = tmp_path / "outputs", tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert cli("model", "reconcile").exit_code == 0
    assert outputs.read_text().splitlines() == [f"model_version={v1}", f"was={v2}", "moved=true"]
    assert f"production moved to version {v1} (was {v2}), as main says" in summary.read_text()
