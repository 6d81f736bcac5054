"""How the store names content: a file by its sha256, a version by its pairs' hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_version(pairs: dict[str, dict[str, Any]], after: str | None = None) -> str:
    """A version id that depends only on the content: same pairs, same id. `after`: the parent of a
    version that puts older masks back, whose content may be an older version's own: its id
    differs, so it is stored as the parent's child instead of pointing back at that older version."""
    digest = hashlib.sha256(f"after {after}\n".encode() if after else b"")
    for pid in sorted(pairs):
        digest.update(f"{pid}\0{pairs[pid]['image']['sha256']}\0{pairs[pid]['mask']['sha256']}\n".encode())
    return digest.hexdigest()[:12]
