"""Writing a file whole or not at all, for every record WMS keeps (pointers, run records, state).

A reader (another command, a resumed run, a crash's successor) sees the old file or the new
one, never half of one: the text is written beside it under a name of its own, so two writers
never share a temporary file, and renamed over it. A write that fails (a full disk, a signal)
removes its temporary file, so nothing half-written stays where `git add -A` would find it.
"""

from __future__ import annotations

import uuid
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename; its folder must exist."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
