"""Checks on what the store reads: version ids and manifests are refused before any path is built.

A manifest names files that `pull` writes under `out/images` and `out/masks`; a name such as
`../x` or `/etc/x` would write anywhere. So every id and name is held to the form the store
itself produces, and a manifest is checked whole before anything is written.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PureWindowsPath
from typing import Any

from wms.errors import ConflictError, DataError

VERSION_ID = re.compile(r"[0-9a-f]{12}")
SHA256 = re.compile(r"[0-9a-f]{64}")
KINDS = ("image", "mask")
SPLIT_NAMES = ("train", "val", "test")

_ID_HINT = "pick an id from `wms data versions` or fix data/dataset.json"


def check_version_id(version: object, what: str = "dataset version", fix: str = _ID_HINT) -> str:
    """`version` when it has the form the store makes (12 lowercase hex characters); DataError otherwise."""
    if not isinstance(version, str) or not VERSION_ID.fullmatch(version):
        raise DataError(
            f"{what} {version!r} is not a dataset version id (12 lowercase hex characters, "
            f"e.g. 3f2a9c01b7de); {fix}"
        )
    return version


def name_problem(name: object) -> str | None:
    """Why `name` is not a plain file name, or None when it is one."""
    if not isinstance(name, str) or not name:
        return "is empty or not text"
    if name in (".", ".."):
        return "is a folder reference"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a control character"
    if PureWindowsPath(name).anchor:
        return "is an absolute path"
    if name.startswith("."):
        return "is a hidden file (pairing skips those)"
    return None


def folded(pair_id: str) -> str:
    """A pair id as a case-insensitive file system (macOS, Windows) sees it: ids that fold alike
    name the same files there, so one pair's image and the other's mask could be all that is left."""
    return unicodedata.normalize("NFC", pair_id).casefold()


def check_manifest(manifest: object, version: str, where: str) -> dict[str, Any]:
    """The manifest of `version` read from `where`, checked whole; DataError naming the first problem."""

    def refuse(problem: str) -> DataError:
        return DataError(
            f"the manifest of version {version} in {where} is refused: {problem}; nothing was written. "
            "The store may have been edited by hand: restore that manifest or ingest the data again"
        )

    if not isinstance(manifest, dict):
        raise refuse("it is not a JSON object")
    if manifest.get("version") != version:
        raise refuse(f"it names itself {manifest.get('version')!r}")
    parent = manifest.get("parent")
    if parent is not None and not (isinstance(parent, str) and VERSION_ID.fullmatch(parent)):
        raise refuse(f"its parent {parent!r} is not a version id (12 lowercase hex characters)")
    if not isinstance(manifest.get("created_at"), str):
        raise refuse("it has no created_at time")
    counts = manifest.get("counts")
    if not isinstance(counts, dict) or not isinstance(counts.get("pairs"), int):
        raise refuse("it has no pair count")
    pairs = manifest.get("pairs")
    if not isinstance(pairs, dict):
        raise refuse("it has no pairs")
    for pid, entry in pairs.items():
        problem = entry_problem(pid, entry)
        if problem:
            raise refuse(f"pair {pid!r} {problem}")
    return manifest


def entry_problem(pair_id: str, entry: object) -> str | None:
    """Why one manifest entry cannot be trusted, or None when it can."""
    if not isinstance(entry, dict):
        return "is not a JSON object"
    for kind in KINDS:
        item = entry.get(kind)
        if not isinstance(item, dict):
            return f"has no {kind}"
        name = item.get("name")
        problem = name_problem(name)
        if problem:
            return f"has the {kind} name {name!r}, which is not a plain file name (it {problem})"
        if str(name).rsplit(".", 1)[0] != pair_id:
            return f"has the {kind} name {name!r}, whose stem is not the pair id"
        sha = item.get("sha256")
        if not isinstance(sha, str) or not SHA256.fullmatch(sha):
            return f"has the {kind} sha256 {sha!r}, which is not 64 lowercase hex characters"
    if entry.get("split") not in SPLIT_NAMES:
        return f"has the split {entry.get('split')!r}; it must be one of {', '.join(SPLIT_NAMES)}"
    return None


def corrected_masks(old: dict[str, Any], new: dict[str, Any], base: str | None, correct: bool) -> list[str]:
    """The ids of `new` entries that correct a stored mask: the photo of version `base`, byte for
    byte, with another mask (only with `correct`: a folder pulled from an older version would undo
    corrections made since). ConflictError for any other stored id with other content."""
    clashes = sorted(i for i, e in new.items() if i in old and hashes(old[i]) != hashes(e))
    corrected = [i for i in clashes if old[i]["image"]["sha256"] == new[i]["image"]["sha256"]]
    conflicts = [i for i in clashes if i not in corrected]
    if corrected and not correct:
        raise ConflictError(
            f"{len(corrected)} id(s) already in version {base} with the same photo and another mask: "
            f"{', '.join(corrected[:10])}; pass --correct-masks to replace the stored masks (unless "
            "the folder was pulled from an older version: that would undo corrections made since) "
            "— nothing was written"
        )
    if conflicts:
        raise ConflictError(
            f"{len(conflicts)} id(s) already in version {base} with another photo: "
            f"{', '.join(conflicts[:10])}; rename the new pairs or drop them (to correct a stored "
            "pair's mask, send it with the photo file that pair was sent with, unchanged) — nothing "
            "was written"
        )
    return corrected


def hashes(entry: dict[str, Any]) -> tuple[str, str]:
    """The (image, mask) sha256 of a manifest entry: equal when two entries hold the same pair."""
    return entry["image"]["sha256"], entry["mask"]["sha256"]
