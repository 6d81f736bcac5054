"""The gate and the ledger as an operator meets them, on SQLite MLflow and on a real `mlflow server`.

v1 is promoted on the floor; an untrained candidate is rejected with the reason shown; a
better one is promoted with `previous` pointing at v1; `rollback` restores v1; the ledger
shows every move; a model judged against itself never passes `require_significant`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wms.config import GateSettings, load_settings
from wms.data.splits import split_pairs
from wms.gate import decide
from wms.registry import MlflowRegistry
from wms.train.evaluate import evaluate
from wms.train.segmenter import Segmenter

pytestmark = pytest.mark.slow


def aliases(cli: Callable[..., Any]) -> dict[str, list[str]]:
    return {r["version"]: r["aliases"] for r in json.loads(cli("model", "list", "--json").output)}


def test_reject_promote_rollback_and_the_ledger(
    cli: Callable[..., Any],
    project_dir: Path,
    make_batch: Callable[..., Path],
    tracking: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    first = cli("--set", "train.epochs=2", "pipeline", "run", "--new-data", make_batch("b1", seed=1))
    assert first.exit_code == 0, first.output
    assert "promoted version 1" in first.output and "floor" in first.output

    monkeypatch.setenv("WMS_TRAIN__EPOCHS", "0")
    worse = cli("pipeline", "run", "--new-data", make_batch("b2", count=20, seed=2))
    monkeypatch.delenv("WMS_TRAIN__EPOCHS")
    assert worse.exit_code == 0, worse.output
    assert "not promoted: dice did not improve" in worse.output
    assert "production stays version 1" in worse.output
    assert "keep production" in worse.output  # the gate table is printed
    assert aliases(cli) == {"1": ["production"], "2": []}  # registered for review, not moved
    rejected = json.loads(cli("model", "show", "2", "--json").output)
    assert rejected["tags"]["gate"] == "fail"
    assert "did not improve" in rejected["tags"]["gate_reason"]

    better = cli(
        "--set", "train.epochs=12", "pipeline", "run", "--new-data", make_batch("b3", count=40, seed=3)
    )
    assert better.exit_code == 0, better.output
    assert "promoted version 3" in better.output and "vs baseline" in better.output
    assert aliases(cli) == {"1": ["previous"], "2": [], "3": ["production"]}
    promoted = json.loads(cli("model", "show", "3", "--json").output)
    tags = promoted["tags"]
    assert tags["gate"] == "pass" and tags["run_id"] == promoted["run_id"]
    assert len(tags["model_sha256"]) == 64 and tags["dataset_version"] and tags["git_commit"]
    gate_files = sorted(p.name for p in project_dir.glob(".wms/runs/*/gate/*"))
    assert gate_files.count("gate.json") == 3 and gate_files.count("gate_dice.png") == 2  # v1 had no baseline

    rolled = cli("model", "rollback", "--reason", "v3 misreads dials")
    assert rolled.exit_code == 0, rolled.output
    assert "production moved to version 1 (was 3)" in rolled.output
    assert aliases(cli) == {"1": ["production"], "2": [], "3": ["previous"]}
    moves = json.loads(cli("model", "history", "--json").output)
    assert [(m["action"], m["from_version"], m["to_version"]) for m in moves] == [
        ("promote", None, "1"),
        ("promote", "1", "3"),
        ("rollback", "3", "1"),
    ]
    assert moves[2]["reason"] == "v3 misreads dials" and moves[2]["by"] == "wms model rollback"
    current = json.loads((project_dir / "models" / "production_current.json").read_text())
    assert current["to_version"] == "1"
    table = cli("model", "history")
    assert "rollback" in table.output and "v3 misreads dials" in table.output

    again = cli("model", "promote", "1", "--reason", "again")
    assert again.exit_code == 2 and "already in production" in again.output

    downloaded = cli("model", "download", "production", tmp_path / "v1")
    assert downloaded.exit_code == 0, downloaded.output
    assert "sha256 checked: model.pt" in downloaded.output
    assert (tmp_path / "v1" / "model.pt").exists() and (tmp_path / "v1" / "model.json").exists()

    # The production model against itself, on the merged test split, twice: identical
    # per-image scores, and with require_significant it is never promoted.
    project = load_settings(start=project_dir)
    test_pairs = split_pairs(project, project_dir / ".wms" / "work" / "dataset")["test"]
    with MlflowRegistry(project).fetched("production") as folder:
        model = Segmenter.load(folder)
        a, b = evaluate(model, test_pairs), evaluate(model, test_pairs)
    assert a == b
    assert not decide(GateSettings(require_significant=True), a, b, "1").promote


def test_rollback_with_one_version_says_what_to_do(cli: Callable[..., Any], project_dir: Path) -> None:
    result = cli("model", "rollback")
    assert result.exit_code == 1
    assert "nothing to roll back to: no model is in production" in result.output
    assert not (project_dir / "models").exists()
