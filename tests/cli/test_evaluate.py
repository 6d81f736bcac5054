"""`wms evaluate`: any registered model, scored image by image on a dataset folder."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from wms.config import load_settings
from wms.data.splits import split_pairs
from wms.registry import MlflowRegistry


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

    # So does the model's folder, as `wms model download` writes it.
    assert cli("model", "download", "1", tmp_path / "v1").exit_code == 0
    by_folder = _report(cli, tmp_path / "e.json", tmp_path / "v1", with_production)
    assert by_folder["per_image"] == first["per_image"] and by_folder["folder"] == str(tmp_path / "v1")

    # A model whose stored weights were changed after training is refused, not scored.
    (tmp_path / "swapped").mkdir()
    (tmp_path / "swapped" / "model.pt").write_bytes(b"other weights")
    MlflowRegistry(load_settings()).log_to_run(first["run_id"], tmp_path / "swapped", "model", {})
    for command in (
        ("evaluate", "production", with_production),
        ("predict", with_production / "images", "-m", "1", "-o", tmp_path / "masks"),
    ):
        refused = cli(*command)
        assert refused.exit_code == 1, refused.output
        assert "model.pt has sha256" in refused.output and "do not use it" in refused.output


def test_split_scores_only_that_split_and_draws_its_worst(
    cli: Callable[..., Any], with_production: Path, tmp_path: Path, project_dir: Path
) -> None:
    # One test for both: the trained model is the costly part.
    out = tmp_path / "worst"
    args = ("production", with_production, "--split", "test", "--worst", "5", "--out", out)
    report = _report(cli, tmp_path / "t.json", *args)
    test_ids = [p.id for p in split_pairs(load_settings(), with_production)["test"]]
    assert report["split"] == "test"
    assert [s["id"] for s in report["per_image"]] == test_ids
    assert 5 < report["n"] < 80

    worst = sorted(report["per_image"], key=lambda s: (s["dice"], s["id"]))[:5]
    overlays = sorted(out.glob("*.jpg"))
    assert [p.name.split("-", 1)[1] for p in overlays] == [f"{s['id']}.jpg" for s in worst]
    assert all(max(Image.open(p).size) == 512 for p in overlays)  # a 64-px photo drawn large enough to read
    page = (out / "index.html").read_text()
    assert re.findall(r'<img src="([^"]+)"', page) == [p.name for p in overlays]
    assert re.findall(r'class="id">([^<]+)<', page) == [s["id"] for s in worst]
    assert re.findall(r'class="dice">([0-9.]+)<', page) == [f"{s['dice']:.4f}" for s in worst]
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert links and all((out / link).is_file() for link in links)  # relative: the folder opens anywhere


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--worst", "5"], "--worst 5 needs a folder to draw into: add --out DIR"),
        (["--out", "{tmp}/w"], "add --worst N"),
        (["--worst", "5", "--out", "{tmp}/file.txt"], "is a file; name a folder"),
    ],
)
def test_worst_and_out_mistakes_are_one_clear_line(
    cli: Callable[..., Any], project_dir: Path, tmp_path: Path, args: list[str], says: str
) -> None:
    (tmp_path / "file.txt").write_text("not a folder")
    result = cli("evaluate", "production", tmp_path, *[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.output


def test_unknown_model_is_one_clear_line(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    result = cli("evaluate", "nope", make_batch(count=4))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "nope" in lines[0] and "wms model list" in lines[0]


def test_missing_dataset_says_what_is_wrong(
    cli: Callable[..., Any], project_dir: Path, tmp_path: Path
) -> None:
    result = cli("evaluate", "production", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_a_photo_that_cannot_be_decoded_is_one_clear_line(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path], exported_model: Path
) -> None:
    data = make_batch(count=4)
    photo = sorted((data / "images").iterdir())[2]
    photo.write_bytes(photo.read_bytes()[:200])  # its header reads; its pixels do not
    result = cli("evaluate", exported_model, data)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert f"cannot read {photo} as an image" in lines[-1] and "Traceback" not in result.output


def test_evaluate_explains_itself(cli: Callable[..., Any]) -> None:
    result = cli("evaluate", "--help")
    assert result.exit_code == 0
    assert "--split" in result.output and "--json" in result.output
    assert "--worst" in result.output and "--out" in result.output
