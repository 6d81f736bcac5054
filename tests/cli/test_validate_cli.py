"""`wms data validate` on a dataset with one injected defect of each kind."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


def defective_dataset(root: Path, clean: Path) -> dict[str, str]:
    """Copy clean pairs and break one per code; returns code -> the id that carries it."""
    shutil.copytree(clean, root)
    ids = sorted(p.stem for p in (root / "images").iterdir())
    img, msk = root / "images", root / "masks"
    (msk / f"{ids[0]}.png").unlink()  # missing_mask
    (img / f"{ids[1]}.png").unlink()  # missing_image
    (img / f"{ids[2]}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # unreadable
    Image.new("RGB", (32, 32)).save(img / f"{ids[3]}.png")  # wrong_size
    Image.open(msk / f"{ids[4]}.png").resize((64, 48)).save(msk / f"{ids[4]}.png")  # size_mismatch
    mask = np.asarray(Image.open(msk / f"{ids[5]}.png")).copy()
    mask[mask == 255] = 200
    Image.fromarray(mask).save(msk / f"{ids[5]}.png")  # non_binary_mask
    Image.new("L", (64, 64), 0).save(msk / f"{ids[6]}.png")  # empty_mask
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(img / f"{ids[7]}.png").convert("RGB").save(img / f"{ids[7]}.png", exif=exif)  # exif_rotated
    shutil.copy(img / f"{ids[9]}.png", img / f"{ids[8]}.png")  # duplicate of ids[9]
    Image.open(img / f"{ids[10]}.png").convert("RGBA").save(img / f"{ids[10]}.png")  # bad_mode
    codes = ["missing_mask", "missing_image", "unreadable", "wrong_size", "size_mismatch", "non_binary_mask"]
    codes += ["empty_mask", "exif_rotated", "duplicate", "_twin", "bad_mode"]
    return {code: ids[i] for i, code in enumerate(codes) if code}


def test_every_defect_is_reported_on_its_path(
    cli: Callable[..., Any], make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    expected = defective_dataset(tmp_path / "bad", make_batch("clean", count=14))
    report_path = tmp_path / "report.json"
    result = cli("data", "validate", tmp_path / "bad", "--size", "64", "--json", report_path)
    assert result.exit_code == 1
    report = json.loads(report_path.read_text())
    assert report["ok"] is False
    found: dict[str, list[str]] = {}
    for issue in report["issues"]:
        found.setdefault(issue["code"], []).append(issue["path"])
        assert issue["message"], issue
    for code, pair_id in expected.items():
        if code in ("duplicate", "_twin"):
            continue
        assert any(pair_id in path for path in found.get(code, [])), (code, pair_id, found.get(code))
    # The duplicate is reported once, naming both ids.
    [dup] = [i for i in report["issues"] if i["code"] == "duplicate"]
    assert expected["duplicate"] in dup["path"] + dup["message"], dup
    assert expected["_twin"] in dup["path"] + dup["message"], dup
    severities = {i["code"]: i["severity"] for i in report["issues"]}
    assert severities["empty_mask"] == severities["exif_rotated"] == "warning"
    assert severities["missing_mask"] == severities["duplicate"] == "error"


def test_a_batch_pushed_without_its_masks_folder_is_reported_as_invalid(
    cli: Callable[..., Any], make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    # What `wms vcs take-incoming` writes when only images were pushed: the report (JSON, and the
    # Markdown the workflow posts as a commit comment) must exist and name every lonely photo.
    batch = tmp_path / "incoming"
    shutil.copytree(make_batch("clean", count=2) / "images", batch / "images")
    report_path, markdown = tmp_path / "report.json", tmp_path / "report.md"
    result = cli("data", "validate", batch, "--size", "64", "--json", report_path, "--markdown", markdown)
    assert result.exit_code == 1 and "Traceback" not in result.output
    report = json.loads(report_path.read_text())
    assert report["ok"] is False and report["pairs"] == 0
    assert [i["code"] for i in report["issues"]] == ["missing_mask", "missing_mask"]
    assert "missing_mask" in markdown.read_text()
    (batch / "images").rename(batch / "photos")  # neither folder: nothing to pair at all
    result = cli("data", "validate", batch, "--json", report_path, "--markdown", markdown)
    assert result.exit_code == 1
    assert [i["code"] for i in json.loads(report_path.read_text())["issues"]] == ["no_pairs"]


def test_inside_github_actions_the_verdict_goes_to_the_step_outputs_and_summary(
    cli: Callable[..., Any], make_batch: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs, summary = tmp_path / "outputs", tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    batch = make_batch("clean", count=3)
    (batch / "masks" / sorted(p.name for p in (batch / "masks").iterdir())[0]).unlink()
    assert cli("data", "validate", batch, "--size", "64").exit_code == 1
    assert outputs.read_text().splitlines() == ["ok=false", "pairs=2", "errors=1", "warnings=0"]
    said = summary.read_text()
    assert "**Dataset NOT ok**: 2 pairs, 1 errors, 0 warnings" in said and "| missing_mask |" in said
