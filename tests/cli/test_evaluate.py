"""`wms evaluate`: any registered model, scored image by image on a dataset folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wms.config import load_settings
from wms.train.run import split_pairs


@pytest.fixture
def with_production(cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path]) -> Path:
    """A project whose production model trained one epoch; returns the dataset it trained on."""
    data = make_batch()
    result = cli("--set", "train.epochs=1", "pipeline", "run", "--new-data", data)
    assert result.exit_code == 0, result.output
    return data


def _report(cli: Callable[..., Any], out: Path, *args: str | Path) -> dict[str, Any]:
    result = cli("evaluate", *args, "--json", out)
    assert result.exit_code == 0, result.output
    assert "Dice" in result.output and "IoU" in result.output
    return json.loads(out.read_text())


def test_same_model_same_scores_and_the_json_schema(
    cli: Callable[..., Any], with_production: Path, tmp_path: Path
) -> None:
    first = _report(cli, tmp_path / "a.json", "production", with_production)
    second = _report(cli, tmp_path / "b.json", "production", with_production)
    assert first["per_image"] == second["per_image"]

    assert first["model"] == "production" and first["version"] == "1"
    assert len(first["run_id"]) == 32
    assert first["dataset"] == str(with_production) and first["split"] == "all"
    assert first["n"] == len(first["per_image"]) == 80
    assert set(first["per_image"][0]) == {"id", "dice", "iou"}
    dice = [s["dice"] for s in first["per_image"]]
    assert first["mean"]["dice"] == pytest.approx(sum(dice) / len(dice))
    assert set(first["mean"]) == {"dice", "iou"}
    assert all(0 <= s["dice"] <= 1 and 0 <= s["iou"] <= s["dice"] + 1e-9 for s in first["per_image"])

    # The version number and the run id name the same model, so they score the same.
    by_version = _report(cli, tmp_path / "c.json", "1", with_production)
    by_run = _report(cli, tmp_path / "d.json", first["run_id"], with_production)
    assert by_version["per_image"] == by_run["per_image"] == first["per_image"]
    assert by_run["version"] == "1" and by_run["model"] == first["run_id"]


def test_split_scores_only_that_split(
    cli: Callable[..., Any], with_production: Path, tmp_path: Path, project_dir: Path
) -> None:
    report = _report(cli, tmp_path / "t.json", "production", with_production, "--split", "test")
    test_ids = [p.id for p in split_pairs(load_settings(), with_production)["test"]]
    assert report["split"] == "test"
    assert [s["id"] for s in report["per_image"]] == test_ids
    assert 0 < report["n"] < 80


def test_unknown_model_is_one_clear_line(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    result = cli("evaluate", "nope", make_batch(count=4))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "nope" in lines[0] and "wms model list" in lines[0]


def test_missing_dataset_says_what_is_wrong(
    cli: Callable[..., Any], project_dir: Path, tmp_path: Path
) -> None:
    result = cli("evaluate", "production", tmp_path / "nowhere")
    assert result.exit_code == 1
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_evaluate_explains_itself(cli: Callable[..., Any]) -> None:
    result = cli("evaluate", "--help")
    assert result.exit_code == 0
    assert "--split" in result.output and "--json" in result.output
