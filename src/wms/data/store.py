"""A local folder dataset store with immutable versions.

    <store>/versions/<version>/images/*, masks/*, manifest.json

A merge builds the new version in a staging folder next to the versions; only a rename
makes it visible, so a crash never leaves a half-written version. The version id is a
hash of the content, so merging the same data twice gives the same version. The version
main trains on is named by the pointer file `data/dataset.json`, which moves only when a
model trained on it is promoted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wms.data.pairs import IMAGE_SUFFIXES
from wms.errors import ConflictError, DataError

MANIFEST = "manifest.json"
KINDS = ("images", "masks")


@dataclass
class StagedVersion:
    """A merged dataset in its staging folder, not yet visible as a version."""

    version: str
    parent: str | None
    path: Path
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    pairs: int = 0


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path, kind: str) -> dict[str, Path]:
    sub = folder / kind
    if not sub.is_dir():
        return {}
    return {
        p.stem: p
        for p in sorted(sub.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    }


def read_pointer(pointer: Path) -> dict[str, Any] | None:
    """The dataset pointer (`data/dataset.json`), or None before the first promotion."""
    if not pointer.is_file():
        return None
    try:
        return dict(json.loads(pointer.read_text()))
    except json.JSONDecodeError:
        raise DataError(
            f"{pointer} is not valid JSON; restore it from git (git checkout -- {pointer})"
        ) from None


def write_pointer(pointer: Path, manifest: dict[str, Any]) -> None:
    """Point main at a dataset version (atomic replace)."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "version": manifest["version"],
        "parent": manifest["parent"],
        "pairs": len(manifest["pairs"]),
        "created_at": manifest["created_at"],
    }
    tmp = pointer.with_name(pointer.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(pointer)


class LocalStore:
    """Dataset versions in a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions_dir = root / "versions"

    def path(self, version: str) -> Path:
        """The folder of a committed version."""
        folder = self.versions_dir / version
        if not (folder / MANIFEST).is_file():
            raise DataError(f"dataset version {version} is not in the store at {self.root}")
        return folder

    def manifest(self, version: str) -> dict[str, Any]:
        """The manifest of a committed version."""
        return dict(json.loads((self.path(version) / MANIFEST).read_text()))

    def stage_merge(self, base: str | None, incoming: Path) -> StagedVersion:
        """Build base + incoming in a staging folder; conflicting ids stop it before anything is kept."""
        if not incoming.is_dir():
            raise DataError(f"new data folder {incoming} does not exist")
        new = {kind: _files(incoming, kind) for kind in KINDS}
        if not new["images"] and not new["masks"]:
            raise DataError(f"no images/ or masks/ files in {incoming}; put pairs in its images/ and masks/")
        old_pairs: dict[str, Any] = self.manifest(base)["pairs"] if base else {}
        base_dir = self.path(base) if base else self.versions_dir

        new_hashes = {
            kind: {stem: sha256_file(p) for stem, p in files.items()} for kind, files in new.items()
        }
        conflicts = sorted(
            {
                stem
                for kind, hashes in new_hashes.items()
                for stem, digest in hashes.items()
                if stem in old_pairs and old_pairs[stem].get(f"{kind[:-1]}_sha256") not in (None, digest)
            }
        )
        if conflicts:
            raise ConflictError(
                f"{len(conflicts)} id(s) already in dataset {base} with other content: "
                f"{', '.join(conflicts[:10])} — rename the new pairs or remove them; nothing was written"
            )

        staging = self.versions_dir / f".staging-{uuid.uuid4().hex[:8]}"
        try:
            pairs: dict[str, dict[str, str]] = {}
            for kind in KINDS:
                (staging / kind).mkdir(parents=True)
            for stem, entry in old_pairs.items():
                for kind in KINDS:
                    rel = entry[kind[:-1]]
                    _link_or_copy(base_dir / rel, staging / rel)
                pairs[stem] = dict(entry)
            added = []
            for kind, files in new.items():
                for stem, src in files.items():
                    entry = pairs.setdefault(stem, {})
                    if f"{kind[:-1]}_sha256" in entry:
                        continue
                    rel = f"{kind}/{src.name}"
                    shutil.copy2(src, staging / rel)
                    entry.update({kind[:-1]: rel, f"{kind[:-1]}_sha256": new_hashes[kind][stem]})
                    added.append(stem)
            version = _content_version(pairs)
            manifest = {
                "version": version,
                "parent": base,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "pairs": dict(sorted(pairs.items())),
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        added_ids = sorted(set(added))
        return StagedVersion(
            version=version,
            parent=base,
            path=staging,
            added=added_ids,
            unchanged=sorted((set(new["images"]) | set(new["masks"])) - set(added_ids)),
            pairs=len(pairs),
        )

    def commit(self, staged: StagedVersion) -> Path:
        """Make a staged version visible (a rename); the same content already there is reused."""
        final = self.versions_dir / staged.version
        if (final / MANIFEST).is_file():
            shutil.rmtree(staged.path, ignore_errors=True)
        else:
            staged.path.rename(final)
        staged.path = final
        return final

    def discard(self, staged: StagedVersion) -> None:
        """Drop a staged version that failed validation."""
        shutil.rmtree(staged.path, ignore_errors=True)


def _content_version(pairs: dict[str, dict[str, str]]) -> str:
    digest = hashlib.sha256()
    for stem in sorted(pairs):
        entry = pairs[stem]
        digest.update(f"{stem}\0{entry.get('image_sha256', '')}\0{entry.get('mask_sha256', '')}\n".encode())
    return digest.hexdigest()[:12]


def _link_or_copy(src: Path, dst: Path) -> None:
    # Versions are immutable, so a hard link shares the bytes safely; copy across devices.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
