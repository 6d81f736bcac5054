"""`data/dataset.json`: the dataset version main points at.

It moves when a person ingests data, or when the pipeline promotes a model trained on a
new version; git history then tells which data every model saw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wms.errors import DataError
from wms.files import write_text_atomic

if TYPE_CHECKING:
    from wms.data.store import DatasetStore


def parse_pointer(text: str, name: str, fix: str) -> dict[str, Any]:
    """The content a dataset.json's `text` records; DataError when it is no JSON or names no
    version. `name` says which copy the message is about, `fix` what to do about it."""
    try:
        body = json.loads(text)
    except ValueError:
        raise DataError(f"{name} is not valid JSON; {fix}") from None
    if not isinstance(body, dict):
        raise DataError(f"{name} holds {json.dumps(body)[:40]}, not a JSON object naming a version; {fix}")
    if "version" not in body:
        raise DataError(f"{name} names no version; {fix}")
    return body


def read_pointer(pointer: Path) -> dict[str, Any] | None:
    """The pointer's content, or None before the first version."""
    if not pointer.is_file():
        return None
    return parse_pointer(pointer.read_text(), str(pointer), f"restore it with `git checkout -- {pointer}`")


def write_pointer(pointer: Path, manifest: dict[str, Any], manifest_sha256: str, store_url: str) -> None:
    """Point at a version (atomic replace)."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "version": manifest["version"],
        "parent": manifest["parent"],
        "created_at": manifest["created_at"],
        "counts": manifest["counts"],
        "manifest_sha256": manifest_sha256,
        "store": store_url,
    }
    write_text_atomic(pointer, json.dumps(body, indent=2) + "\n")


def pointed_version(pointer: dict[str, Any] | None, where: str, store: DatasetStore, url: str) -> str | None:
    """The version `pointer` (read from `where`) names; None before the first.

    A pointer written for another store than `url` (store.url changed since, or not set on this
    machine) must name a version this store holds, or the error says which store it names.
    """
    if pointer is None:
        return None
    version = str(pointer["version"])
    recorded = pointer.get("store")
    if isinstance(recorded, str) and recorded and recorded != url:
        try:
            store.manifest(version)
        except DataError as exc:
            raise DataError(
                f"{exc}; {where} was written for the store {recorded} and store.url is {url}: "
                f"set store.url (or WMS_STORE__URL) to {recorded}"
            ) from None
    return version
