"""Records are written whole or not at all, and a failed write leaves no temporary file behind."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from wms import files
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


@pytest.fixture
def disk_events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What reaches the disk and when: each fsync (of a file, with its size, or of a folder) and
    each rename, in order."""
    events: list[str] = []
    sync, replace = os.fsync, Path.replace

    def record_sync(fd: int) -> None:
        info = os.fstat(fd)
        events.append("sync folder" if stat.S_ISDIR(info.st_mode) else f"sync {info.st_size} bytes")
        sync(fd)

    def record_replace(self: Path, other: Path) -> Path:
        events.append(f"rename to {Path(other).name}")
        return replace(self, other)

    monkeypatch.setattr(files.os, "fsync", record_sync)
    monkeypatch.setattr(Path, "replace", record_replace)
    return events


def test_the_bytes_are_on_disk_before_the_name_points_at_them_and_the_name_before_it_returns(
    tmp_path: Path, disk_events: list[str]
) -> None:
    """A power loss keeps the old file or the new one: no name left with nothing behind it."""
    write_text_atomic(tmp_path / "run.json", "{}\n")
    assert disk_events == ["sync 3 bytes", "rename to run.json", "sync folder"]
    assert (tmp_path / "run.json").read_text() == "{}\n"


def test_a_training_checkpoint_is_on_disk_before_it_replaces_the_last_one(
    tmp_path: Path, disk_events: list[str]
) -> None:
    """An instance that fails mid-run goes on from its last epoch, not from a file it cannot read."""
    from wms.train.checkpoint import epochs_held, save_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {}, "history": [{"epoch": 1}, {"epoch": 2}]})
    size = path.stat().st_size
    assert disk_events == [f"sync {size} bytes", "rename to checkpoint.pt", "sync folder"]
    assert epochs_held(path) == 2


def test_a_folder_store_file_in_new_folders_is_on_disk_with_the_folders_that_hold_it(
    tmp_path: Path, disk_events: list[str]
) -> None:
    """A blob in a shard folder made for it: each new folder's name is synced in its parent."""
    import fsspec

    files.put_file(fsspec.filesystem("file"), str(tmp_path / "blobs" / "ab" / "abcd"), b"pixels")
    assert disk_events == ["sync folder", "sync folder", "sync 6 bytes", "rename to abcd", "sync folder"]
    assert (tmp_path / "blobs" / "ab" / "abcd").read_bytes() == b"pixels"
    disk_events.clear()
    files.put_file(fsspec.filesystem("file"), str(tmp_path / "blobs" / "ab" / "abce"), b"more")
    assert disk_events == ["sync 4 bytes", "rename to abce", "sync folder"]


def test_a_new_run_record_is_on_disk_with_the_folder_made_for_it(
    tmp_path: Path, disk_events: list[str]
) -> None:
    """A power loss just after a run starts keeps its record: `runs/<id>/`'s name is synced too."""
    from wms.runs import PipelineRun

    run = PipelineRun(run_id="r1", new_data="batch", run_dir=tmp_path / "runs" / "r1")
    run.save()
    size = (tmp_path / "runs" / "r1" / "run.json").stat().st_size
    assert disk_events == [
        "sync folder",
        "sync folder",
        f"sync {size} bytes",
        "rename to run.json",
        "sync folder",
    ]
    disk_events.clear()
    run.save()  # the folder is there: only the record is synced
    assert disk_events == [f"sync {size} bytes", "rename to run.json", "sync folder"]


def test_a_move_of_production_is_on_disk_in_the_pointer_and_in_the_ledger(
    tmp_path: Path, disk_events: list[str]
) -> None:
    """The ledger is appended to, not rewritten: its new line is synced before the move returns."""
    from wms.production import read_history, record_move

    models = tmp_path / "models"
    record_move(models, {"action": "promote", "from_version": None, "to_version": "1"})
    pointer = (models / "production_current.json").stat().st_size
    ledger = (models / "production_history.jsonl").stat().st_size
    assert disk_events == [
        "sync folder",  # models/ in its parent
        f"sync {pointer} bytes",
        "rename to production_current.json",
        "sync folder",
        f"sync {ledger} bytes",
        "sync folder",  # the new ledger's name
    ]
    disk_events.clear()
    record_move(models, {"action": "promote", "from_version": "1", "to_version": "2"})
    assert disk_events[-1] == f"sync {(models / 'production_history.jsonl').stat().st_size} bytes"
    assert [m["to_version"] for m in read_history(models)] == ["1", "2"]


def test_a_checkpoint_in_a_new_folder_is_on_disk_with_its_folder(
    tmp_path: Path, disk_events: list[str]
) -> None:
    """`wms train --checkpoint runs/today/train.pt` makes runs/today/: its name is synced too."""
    from wms.train.checkpoint import epochs_held, save_checkpoint

    path = tmp_path / "runs" / "today" / "train.pt"
    save_checkpoint(path, {"model": {}, "history": [{"epoch": 1}]})
    size = path.stat().st_size
    assert disk_events == [
        "sync folder",
        "sync folder",
        f"sync {size} bytes",
        "rename to train.pt",
        "sync folder",
    ]
    assert epochs_held(path) == 1
