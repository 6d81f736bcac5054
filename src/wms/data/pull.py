"""`DatasetStore.pull`: a stored version written into a local folder, every byte verified.

Only missing or damaged files are fetched. What can be checked first is checked before the
folder is touched: the manifest (whole), and that the store still holds every blob to fetch,
so a store that lost a blob writes nothing and names the pair to ingest again. A local folder
that cannot be written is one DataError line, not a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wms.data.hashes import sha256_file
from wms.data.manifest import KINDS
from wms.data.splits import write_splits
from wms.errors import BackendError, DataError
from wms.files import write_bytes_atomic

if TYPE_CHECKING:
    from wms.data.store import DatasetStore, Progress


@dataclass
class PullResult:
    """What a pull did."""

    version: str
    fetched: int = 0
    reused: int = 0
    extra: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # files there that differed: edited, or damaged


@dataclass(frozen=True)
class _File:
    target: Path
    sha: str
    what: str  # "the image of pair X", for messages


def pull_version(
    store: DatasetStore, version: str, out: Path, progress: Progress | None = None
) -> PullResult:
    """Write `version`'s pairs into out/images and out/masks, and its splits into out/splits.json."""
    pairs = store.manifest(version)["pairs"]
    wanted = [
        _File(out / f"{kind}s" / entry[kind]["name"], entry[kind]["sha256"], f"the {kind} of pair {pid!r}")
        for pid, entry in pairs.items()
        for kind in KINDS
    ]
    result = PullResult(version)
    try:
        if out.exists() and not out.is_dir():
            raise DataError(f"cannot pull version {version} into {out}: it is a file; choose a folder path")
        stale = [f for f in wanted if not (f.target.is_file() and sha256_file(f.target) == f.sha)]
        _check_blobs(store, version, stale)
        result.reused = len(wanted) - len(stale)
        result.replaced = [str(f.target) for f in stale if f.target.exists()]
        if progress:
            for _ in range(result.reused):
                progress()
        for kind in KINDS:
            (out / f"{kind}s").mkdir(parents=True, exist_ok=True)

        def one(f: _File) -> int:
            data = store.read_blob(f.sha, f"{f.what} in version {version}")
            write_bytes_atomic(f.target, data)
            if progress:
                progress()
            return 1

        result.fetched = sum(store._parallel(one, stale))
        present = {p for kind in KINDS for p in (out / f"{kind}s").iterdir() if p.is_file()}
        result.extra = sorted(str(p) for p in present - {f.target for f in wanted})
        write_splits(out, version, pairs)
    except OSError as exc:
        raise DataError(
            f"cannot pull version {version} into {out} ({exc.strerror or exc}"
            f"{': ' + str(exc.filename) if exc.filename else ''}); choose a folder you can write to"
        ) from None
    return result


def _check_blobs(store: DatasetStore, version: str, files: list[_File]) -> None:
    """BackendError naming the pairs whose blobs the store lacks, before anything is written."""
    if not files:
        return
    missing = set(store._missing_blobs(f.sha for f in files))
    lost = [f for f in files if f.sha in missing]
    if lost:
        more = f" and {len(lost) - 1} more file(s)" if len(lost) > 1 else ""
        erased = store.erased(lost[0].sha)
        if erased is not None:
            raise BackendError(
                f"version {version} cannot be pulled whole: {lost[0].what}{more} was erased from the store "
                f"{store.url} on {erased.get('erased_at', '?')} by `wms data forget` "
                f"(pair {erased.get('pair', '?')}); pull a later version, such as the one "
                "data/dataset.json names — nothing was written"
            )
        raise BackendError(
            f"version {version} in the store {store.url} is missing {lost[0].what} "
            f"(blob {lost[0].sha[:12]}){more}; ingest that pair again with `wms data ingest DIR` "
            "to restore it — nothing was written"
        )
