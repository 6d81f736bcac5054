"""The seed's flow on one machine: pairs committed on a data branch → `wms pipeline run` →
the better model promoted → the branch's pairs swapped for pointers and merged into main."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from tests.conftest import TINY_SETTINGS

from wms.data.synth import synthesize

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo

pytestmark = pytest.mark.slow
BRANCH = "data/20261126-120000"


def test_a_promoted_data_branch_is_merged_with_pointers_not_pairs(
    repo: Repo, cli: Callable[..., object]
) -> None:
    repo.write("wms.toml", TINY_SETTINGS + '\n[git]\nbase_branch = "main"\n')
    repo.commit("tiny settings for the test")
    repo.git("switch", "-q", "-c", BRANCH)
    synthesize(repo.work / "data" / "incoming", count=80, size=64, seed=1)
    batch = repo.commit("80 labelled pairs")

    result = cli("pipeline", "run")
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 0, output  # type: ignore[attr-defined]
    assert "promoted version 1" in output
    assert f"merged {BRANCH} into main" in output

    assert repo.out("branch", "--show-current") == "main"
    assert repo.out("branch", "--list", BRANCH) == ""
    tracked = repo.out("ls-files").splitlines()
    assert [p for p in tracked if p.startswith("data/incoming/")] == ["data/incoming/.gitkeep"]
    pointer = json.loads((repo.work / "data" / "dataset.json").read_text())
    assert pointer["counts"]["pairs"] == 80
    assert "data/dataset.json" in tracked and "models/production_history.jsonl" in tracked
    # The move names its batch, so the sweep finds a batch main took even once its branch is gone.
    [move] = (repo.work / "models" / "production_history.jsonl").read_text().splitlines()
    assert json.loads(move)["batch"] == batch
    record = json.loads(next((repo.work / ".wms" / "runs").glob("*/run.json")).read_text())
    stages = {s["name"]: s["status"] for s in record["stages"]}
    assert stages["publish"] == "ok"


def test_a_batch_merged_into_main_stays_promoted_when_reconcile_then_fails(
    repo: Repo, cli: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write("wms.toml", TINY_SETTINGS + '\n[git]\nbase_branch = "main"\n')
    repo.commit("tiny settings for the test")
    repo.git("switch", "-q", "-c", BRANCH)
    synthesize(repo.work / "data" / "incoming", count=30, size=64, seed=1)
    sha = repo.commit("30 labelled pairs")
    monkeypatch.setenv("WMS_FAULT_STAGE", "reconcile")  # the alias or the deployment fails after the merge

    result = cli("--set", "train.epochs=1", "pipeline", "run")
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 1, output
    assert f"merged {BRANCH} into main" in output

    # Main has the batch: it is counted promoted, and no sweep trains it again.
    record = json.loads((repo.work / ".wms" / "store" / "batches" / f"{sha}.json").read_text())
    assert record["status"] == "promoted", record
    assert "wms model reconcile --deploy" in output and "wms pipeline resume" not in output
    monkeypatch.delenv("WMS_FAULT_STAGE")
    swept = cli("pipeline", "sweep", "--dry-run")
    assert "nothing to do" in swept.output, swept.output  # type: ignore[attr-defined]
    assert cli("model", "reconcile").exit_code == 0  # type: ignore[attr-defined]
