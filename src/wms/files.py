"""Writing a file whole or not at all, for every record WMS keeps (pointers, run records, state).

A reader (another command, a resumed run, a crash's successor) sees the old file or the new
one, never half of one: the bytes are written beside it under a name of its own, so two
writers never share a temporary file, and renamed over it. The bytes reach the disk before the
rename, and the rename before the write returns, so a machine that loses power keeps one of the
two as well: without that, a file system that allocates late (ext4, XFS) may keep the new name
with no bytes behind it. A write that fails (a full disk, a signal) removes its temporary file,
so nothing half-written stays where `git add -A` would find it. `put_file` does the same on an
fsspec file system (a folder store, or S3), and a folder made for a record (`make_folders`) has
its name on disk too. A ledger is appended to (`append_text`), its new line on disk before the
append returns.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one rename; its folder must exist."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        rename_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def rename_durably(tmp: Path, path: Path) -> None:
    """Rename the finished file `tmp` over `path`, its bytes on disk before the name points at them
    and the rename on disk before this returns (for files written by others, e.g. torch.save)."""
    _sync(tmp, os.O_RDWR)
    tmp.replace(path)
    _sync_folder(path.parent)


def _sync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    """Put a rename in `folder` on disk (where the platform can sync a folder; else it waits)."""
    with contextlib.suppress(OSError):  # Windows opens no folder; some file systems cannot sync one
        _sync(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) in one rename; its folder must exist."""
    write_bytes_atomic(path, text.encode())


def append_text(path: Path, text: str) -> None:
    """Append `text` (UTF-8) to `path`, made if missing, and have it on disk before this returns:
    for a ledger, whose lines are never rewritten (a power loss may cut the last line short)."""
    new = not path.exists()
    with path.open("a", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    if new:
        _sync_folder(path.parent)


def put_file(fs: Any, path: str, data: bytes) -> None:
    """Write `data` to `path` on the fsspec file system `fs` whole or not at all.

    An S3 PUT is atomic; a local write is not, so it goes through `write_bytes_atomic`.
    """
    if "file" not in fs.protocol:
        fs.pipe_file(path, data)
        return
    target = Path(fs._strip_protocol(path))
    make_folders(target.parent)
    write_bytes_atomic(target, data)


def make_folders(folder: Path) -> None:
    """Make `folder` and its missing parents, each new folder's name on disk in its parent before
    this returns, so a file written into it is not kept by a power loss that loses the folder."""
    made = []
    while not folder.exists():  # the folders this makes, deepest first
        made.append(folder)
        folder = folder.parent
    if not made:
        return
    made[0].mkdir(parents=True, exist_ok=True)
    for new in reversed(made):
        _sync_folder(new.parent)
