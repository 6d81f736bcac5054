"""Pairing images with masks by stem."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from wms.data import IMAGE_SUFFIXES, find_pairs
from wms.errors import DataError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8)).save(path)
    return path


def test_pairs_by_stem_across_extensions_sorted(tmp_path: Path) -> None:
    _touch(tmp_path / "images/b.jpg")
    _touch(tmp_path / "masks/b.png")
    _touch(tmp_path / "images/a.PNG")
    _touch(tmp_path / "masks/a.png")
    scan = find_pairs(tmp_path)
    assert [p.id for p in scan.pairs] == ["a", "b"]
    assert scan.pairs[1].image == tmp_path / "images/b.jpg"
    assert scan.pairs[1].mask == tmp_path / "masks/b.png"
    assert scan.missing_mask == [] and scan.missing_image == []


def test_orphans_reported(tmp_path: Path) -> None:
    lone_image = _touch(tmp_path / "images/only_image.png")
    lone_mask = _touch(tmp_path / "masks/only_mask.png")
    scan = find_pairs(tmp_path)
    assert scan.pairs == []
    assert scan.missing_mask == [lone_image]
    assert scan.missing_image == [lone_mask]


def test_hidden_and_other_suffixes_ignored(tmp_path: Path) -> None:
    _touch(tmp_path / "images/a.png")
    _touch(tmp_path / "masks/a.png")
    _touch(tmp_path / "images/.hidden.png")
    (tmp_path / "images/notes.txt").write_text("x")
    (tmp_path / "masks/Thumbs.db").write_text("x")
    scan = find_pairs(tmp_path)
    assert [p.id for p in scan.pairs] == ["a"]
    assert scan.missing_mask == [] and scan.missing_image == []


@pytest.mark.parametrize("missing", ["images", "masks"])
def test_missing_folder_is_a_data_error(tmp_path: Path, missing: str) -> None:
    other = "masks" if missing == "images" else "images"
    (tmp_path / other).mkdir()
    with pytest.raises(DataError, match=f"no {missing}/ folder") as info:
        find_pairs(tmp_path)
    assert "images/ and masks/" in str(info.value)


def test_two_files_for_one_stem_is_a_data_error(tmp_path: Path) -> None:
    _touch(tmp_path / "images/a.png")
    _touch(tmp_path / "images/a.jpg")
    _touch(tmp_path / "masks/a.png")
    with pytest.raises(DataError, match="more than one file"):
        find_pairs(tmp_path)


def test_suffixes_constant() -> None:
    assert IMAGE_SUFFIXES == (".png", ".jpg", ".jpeg")
