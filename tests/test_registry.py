from __future__ import annotations

import json
from pathlib import Path

import pytest

from wms.config import load_settings
from wms.errors import RegistryError
from wms.registry import MlflowRegistry, record_move


@pytest.fixture
def registry(project_dir: Path) -> MlflowRegistry:
    return MlflowRegistry(load_settings(start=project_dir))


def logged_run(registry: MlflowRegistry, tmp_path: Path, dice: float) -> str:
    model = tmp_path / f"model-{dice}"
    model.mkdir()
    (model / "model.json").write_text("{}")
    (model / "model.pt").write_bytes(b"weights")
    with registry.start_run("test", {}) as run:
        run.log_metrics({"test_dice": dice, "test_iou": dice - 0.1})
        run.log_artifacts(model, "model")
    return run.run_id


def test_promotion_moves_production_and_previous(registry: MlflowRegistry, tmp_path: Path) -> None:
    assert registry.production() is None
    v1 = registry.register(logged_run(registry, tmp_path, 0.7), {"dataset_version": "a"})
    assert registry.promote(v1.version) is None
    v2 = registry.register(logged_run(registry, tmp_path, 0.8), {"dataset_version": "b"})
    old = registry.promote(v2.version)
    assert old is not None and old.version == v1.version
    listed = {r.version: r for r in registry.list()}
    assert listed[v2.version].aliases == ["production"]
    assert listed[v1.version].aliases == ["previous"]
    assert listed[v2.version].metrics["test_dice"] == pytest.approx(0.8)
    assert listed[v2.version].tags["dataset_version"] == "b"


def test_download_gives_back_the_logged_files(registry: MlflowRegistry, tmp_path: Path) -> None:
    version = registry.register(logged_run(registry, tmp_path, 0.7), {}).version
    registry.promote(version)
    with registry.fetched("production") as folder:
        assert (folder / "model.pt").read_bytes() == b"weights"


def test_unknown_ref_lists_what_exists(registry: MlflowRegistry, tmp_path: Path) -> None:
    registry.register(logged_run(registry, tmp_path, 0.7), {})
    with pytest.raises(RegistryError, match=r"versions: 1"):
        registry.get("7")


def test_every_move_is_in_the_ledger(tmp_path: Path) -> None:
    record_move(tmp_path, {"action": "promote", "to_version": "1"})
    record_move(tmp_path, {"action": "promote", "from_version": "1", "to_version": "2"})
    current = json.loads((tmp_path / "production_current.json").read_text())
    history = [json.loads(line) for line in (tmp_path / "production_history.jsonl").read_text().splitlines()]
    assert current["to_version"] == "2"
    assert [h["to_version"] for h in history] == ["1", "2"]
    assert all("at" in h for h in history)
