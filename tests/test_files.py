"""Records are written whole or not at all, and a failed write leaves no temporary file behind."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from wms.files import write_text_atomic


def test_a_write_replaces_the_file_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "dataset.json"
    target.write_text("old\n")
    write_text_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["dataset.json"]


def test_a_write_the_disk_refuses_keeps_the_old_file_and_removes_its_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """E.g. a full disk in the checkout: no half-written file, and no `.tmp` for `git add -A` to find."""
    target = tmp_path / "production_current.json"
    target.write_text("old\n")

    def disk_full(self: Path, other: Path) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["production_current.json"]
