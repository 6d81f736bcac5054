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


def content_version(pairs: dict[str, dict[str, Any]]) -> str:
    """A version id that depends only on the content: same pairs, same id."""
    digest = hashlib.sha256()
    for pid in sorted(pairs):
        digest.update(f"{pid}\0{pairs[pid]['image']['sha256']}\0{pairs[pid]['mask']['sha256']}\n".encode())
    return digest.hexdigest()[:12]
