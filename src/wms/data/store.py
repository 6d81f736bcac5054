"""The versioned dataset store: content-addressed blobs and immutable version manifests.

    <store>/blobs/<sha[:2]>/<sha256>     the bytes of every image and mask, once
    <store>/versions/<version>.json      a manifest: id -> image, mask, split, size; parent; counts
    <store>/lock/<generation>.json       the writers' lease lock (see wms.data.lease)
    <store>/erased/<sha256>.json         why a blob was deleted (`wms data forget`: a person's photo)

One code path serves a local folder and S3 (`s3://bucket/prefix`) through fsspec; S3
credentials and endpoint come from the usual AWS variables (`AWS_ENDPOINT_URL`, ...).
A version becomes visible only when its manifest is written, and the manifest is written
last, after every blob: a crash leaves at most unreferenced blobs, never a half version.

The store trusts nothing it reads: version ids and every manifest are checked
(`wms.data.manifest`) before any path is built from them, and a pulled folder carries
its version's splits in `splits.json`, so a changed fraction never moves an old pair.
What an ingest would add is worked out in `wms.data.plan`; a pull is `wms.data.pull`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from wms.config import Project
from wms.data.backend import store_errors
from wms.data.hashes import content_version
from wms.data.lease import lease
from wms.data.manifest import SHA256, VERSION_ID, check_manifest, check_version_id, hashes
from wms.data.plan import IngestPlan, plan_ingest
from wms.data.pointer import write_pointer
from wms.errors import BackendError, DataError, VersionNotFound
from wms.files import put_file

if TYPE_CHECKING:
    from wms.data.pull import PullResult

Progress = Callable[[], None]
Item = TypeVar("Item")


@dataclass(frozen=True)
class VersionInfo:
    """A version as `wms data versions` lists it."""

    id: str
    parent: str | None
    created_at: str
    pairs: int


@dataclass
class IngestResult:
    """What an ingest did."""

    version: str
    parent: str | None
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    blobs_written: int = 0
    corrected: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)  # of `corrected`, those given an older mask back

    @property
    def no_change(self) -> bool:
        return not self.added and not self.corrected


@dataclass
class VersionDiff:
    """Ids added, removed and changed from version A to version B."""

    added: list[str]
    removed: list[str]
    changed: list[str]


class DatasetStore:
    """Dataset versions on a local folder or S3."""

    def __init__(
        self,
        url: str,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        lock_ttl_seconds: float = 900,
        lock_wait_seconds: float = 60,
        workers: int = 8,
    ) -> None:
        import fsspec

        self.url = url
        try:
            self.fs, self.root = fsspec.core.url_to_fs(
                url, skip_instance_cache=True, use_listings_cache=False
            )
        except (ImportError, ValueError) as exc:
            raise BackendError(f"cannot open the dataset store {url!r}: {exc}") from None
        self.root = self.root.rstrip("/")
        self.local = "file" in self.fs.protocol
        self.fractions = (val_fraction, test_fraction)
        self.lock_ttl, self.lock_wait = lock_ttl_seconds, lock_wait_seconds
        self.workers = workers

    # -- layout ---------------------------------------------------------------------------
    def blob_path(self, sha: str) -> str:
        """Where blob `sha` is kept in the store."""
        return f"{self.root}/blobs/{sha[:2]}/{sha}"

    def _manifest_path(self, version: str) -> str:
        return f"{self.root}/versions/{check_version_id(version)}.json"

    @property
    def lock_path(self) -> str:
        """The writers' lease lock (`wms.data.lease`)."""
        return f"{self.root}/lock.json"

    def _put(self, path: str, data: bytes) -> None:
        put_file(self.fs, path, data)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        with store_errors(f"{what} in the dataset store {self.url}"):
            return fn(*args)

    # -- reading --------------------------------------------------------------------------
    def versions(self, last: int | None = None) -> list[VersionInfo]:
        """All versions, or the `last` ones written, oldest first.

        Only the manifests of the versions returned are read, several at a time: a store gains a
        version with every batch, and each manifest names every pair of its version."""
        infos = [
            VersionInfo(m["version"], m["parent"], m["created_at"], m["counts"]["pairs"])
            for m in self.manifests(last).values()
        ]
        return sorted(infos, key=lambda v: (v.created_at, v.id))

    def manifests(self, last: int | None = None) -> dict[str, dict[str, Any]]:
        """The manifests of all versions, or of the `last` ones written, by id, read several at a
        time; a listed name that is no version id is refused."""
        ids = self._latest_ids(last)
        for version in ids:
            check_version_id(
                version, f"{self.root}/versions/{version}.json names", "remove that file from the store"
            )
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return dict(zip(ids, pool.map(self.manifest, ids), strict=True))

    def count_versions(self) -> int:
        """How many versions the store holds, from the listing alone."""
        return len(self._latest_ids(None))

    def _latest_ids(self, count: int | None) -> list[str]:
        """The ids of the `count` (None: all) versions written last, newest first, from the listing
        alone: reading every manifest takes longer with every batch, and one damaged manifest
        would answer instead. A `.json` name that is no version id is listed too (the caller
        refuses it)."""
        try:
            listed = self._call("list versions", self.fs.ls, f"{self.root}/versions", True)
        except FileNotFoundError:
            return []
        written = {}
        for info in listed:
            name = str(info["name"])
            if name.endswith(".json"):
                when = info.get("LastModified") or info.get("mtime") or 0  # S3's datetime, a file's float
                written[name.rsplit("/", 1)[-1].removesuffix(".json")] = (
                    when.timestamp() if isinstance(when, datetime) else float(when)
                )
        newest = sorted(written, key=lambda v: (written[v], v), reverse=True)
        return newest if count is None else newest[:count]

    def manifest(self, version: str) -> dict[str, Any]:
        """The manifest of a version, checked whole (ids, file names, hashes, splits)."""
        return self._read_manifest(version)[0]

    def _read_manifest(self, version: str) -> tuple[dict[str, Any], bytes]:
        path = self._manifest_path(version)  # refuses a malformed id before touching the store
        try:
            raw = self._call("read a manifest", self.fs.cat_file, path)
        except FileNotFoundError:
            known = ", ".join(v for v in self._latest_ids(5) if VERSION_ID.fullmatch(v))
            raise VersionNotFound(
                f"dataset version {version!r} is not in the store {self.url} "
                f"(latest: {known or 'none'}); see `wms data versions`"
            ) from None
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        return check_manifest(parsed, version, self.url), raw

    def manifest_sha256(self, version: str) -> str:
        """sha256 of the stored manifest bytes (recorded in data/dataset.json)."""
        return hashlib.sha256(self._read_manifest(version)[1]).hexdigest()

    def point(self, pointer: Path, version: str, store_url: str) -> None:
        """Point `data/dataset.json` at a version, reading its manifest once for content and hash."""
        manifest, raw = self._read_manifest(version)
        write_pointer(pointer, manifest, hashlib.sha256(raw).hexdigest(), store_url)

    def diff(self, a: str, b: str) -> VersionDiff:
        """How version `b` differs from version `a`."""
        pa, pb = self.manifest(a)["pairs"], self.manifest(b)["pairs"]
        changed = [i for i in sorted(set(pa) & set(pb)) if hashes(pa[i]) != hashes(pb[i])]
        return VersionDiff(sorted(set(pb) - set(pa)), sorted(set(pa) - set(pb)), changed)

    # -- writing --------------------------------------------------------------------------
    def plan(
        self,
        folder: Path,
        base: str | None,
        for_validation: bool = False,
        correct: bool = False,
        cut: str | None = None,
        restore: frozenset[str] = frozenset(),
    ) -> IngestPlan:
        """What ingesting `folder` onto `base` would add; writes nothing (see
        wms.data.plan.plan_ingest for what stops it, `for_validation`, `correct`, `cut`, `restore`)."""
        return plan_ingest(self, folder, base, for_validation, correct, cut, restore)

    def ingest(
        self,
        folder: Path,
        base: str | None,
        progress: Progress | None = None,
        expect: Callable[[int], None] | None = None,
        correct: bool = False,
        restore: frozenset[str] = frozenset(),
    ) -> IngestResult:
        """Add the pairs in `folder` to version `base` as a new version; conflicts write nothing.

        `expect` is told how many blobs will be uploaded, before the first; `progress` after each.
        `correct`: a stored photo under its stored name with another mask replaces that mask;
        `restore`: the ids whose older mask (held before, replaced since) is put back on purpose."""
        plan = self.plan(folder, base, correct=correct, restore=restore)
        kept = {sha for entry in plan.pairs.values() for sha in hashes(entry)} - set(plan.sources)
        if kept and kept & self.erased_blobs():  # one listing, where the base holds pairs
            raise DataError(
                f"version {base} holds a photo erased since by `wms data forget`: a version built on it "
                "would name files the store no longer has; ingest onto the version data/dataset.json "
                "names after the forget — nothing was written"
            )
        result = IngestResult(
            plan.version, base, plan.added, plan.unchanged, corrected=plan.corrected, restored=plan.restored
        )
        missing = self._missing_blobs(plan.sources)
        if result.no_change and not missing:
            return result
        if expect is not None:
            expect(len(missing))
        with lease(self.fs, self.lock_path, ttl_seconds=self.lock_ttl, wait_seconds=self.lock_wait):
            result.blobs_written = self._upload({sha: plan.sources[sha] for sha in missing}, progress)
            if not result.no_change and not self.fs.exists(self._manifest_path(plan.version)):
                manifest = self._manifest(plan.version, base, plan.pairs)
                self._put(self._manifest_path(plan.version), json.dumps(manifest, indent=1).encode())
        return result

    def _manifest(self, version: str, parent: str | None, pairs: dict[str, Any]) -> dict[str, Any]:
        counts = {"pairs": len(pairs), "train": 0, "val": 0, "test": 0}
        for entry in pairs.values():
            counts[entry["split"]] += 1
        return {
            "version": version,
            "parent": parent,
            "created_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            "counts": counts,
            "pairs": dict(sorted(pairs.items())),
        }

    def stored_blobs(self, shas: Iterable[str]) -> set[str]:
        """The blobs among `shas` that the store holds (one listing)."""
        wanted = list(shas)
        return set(wanted) - set(self._missing_blobs(wanted)) if wanted else set()

    def _missing_blobs(self, shas: Iterable[str]) -> list[str]:
        """The blobs among `shas` that the store lacks."""
        # One listing instead of a HEAD request per blob: on S3 that halves the requests.
        try:
            present = set(self._call("list blobs", self.fs.find, f"{self.root}/blobs"))
        except FileNotFoundError:
            present = set()
        return [sha for sha in shas if self.blob_path(sha) not in present]

    def _upload(self, sources: dict[str, Path], progress: Progress | None) -> int:
        def one(sha: str) -> int:
            self._call("write a blob", self._put, self.blob_path(sha), sources[sha].read_bytes())
            if progress:
                progress()
            return 1

        return sum(self._parallel(one, sources))

    def _parallel(self, fn: Callable[[Item], int], items: Iterable[Item]) -> list[int]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(fn, items))

    def read_blob(self, sha: str, what: str = "") -> bytes:
        """The bytes of one blob (an image or mask of some version, `what` in messages), checked
        against its sha256; BackendError when the store lacks it."""
        if not SHA256.fullmatch(sha):
            raise DataError(f"{sha!r} is not a blob id (64 lowercase hex characters)")
        try:
            data: bytes = self._call("read a blob", self.fs.cat_file, self.blob_path(sha))
        except FileNotFoundError:
            erased = self.erased(sha)
            if erased is not None:
                raise BackendError(
                    f"blob {sha[:12]}{f' ({what})' if what else ''} was erased from the store {self.url} "
                    f"on {erased.get('erased_at', '?')} by `wms data forget` "
                    f"(pair {erased.get('pair', '?')}): "
                    "a version that held it cannot be read whole any more; use a later version, such "
                    "as the one data/dataset.json names"
                ) from None
            raise BackendError(
                f"the store {self.url} is missing blob {sha[:12]}{f' ({what})' if what else ''}; "
                "ingest the pair it belongs to again with `wms data ingest DIR` to restore it"
            ) from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise BackendError(f"blob {sha} in {self.url} is corrupt: its bytes do not match")
        return data

    # -- forgetting a photo (wms.forget) -------------------------------------------------------
    def without(self, base: str, ids: Iterable[str]) -> str:
        """The version that holds `base`'s pairs but `ids`, written (a child of `base`) unless the
        store holds that content already; its id. No blob is written or deleted here."""
        gone = set(ids)
        pairs = {i: e for i, e in self.manifest(base)["pairs"].items() if i not in gone}
        if not pairs:
            raise DataError(
                f"version {base} holds no pair but {', '.join(sorted(gone))}: a version without "
                f"{'it' if len(gone) == 1 else 'them'} would be empty; delete the store {self.url} instead"
            )
        version = content_version(pairs)
        with lease(self.fs, self.lock_path, ttl_seconds=self.lock_ttl, wait_seconds=self.lock_wait):
            if not self.fs.exists(self._manifest_path(version)):
                manifest = self._manifest(version, base, pairs)
                self._put(self._manifest_path(version), json.dumps(manifest, indent=1).encode())
        return version

    def erase(self, blobs: dict[str, dict[str, Any]]) -> None:
        """Delete blobs for good (sha256 -> why: the pair, the versions that held it). Each is
        recorded in erased/<sha256>.json first, so that a reader of an older version is told."""
        with lease(self.fs, self.lock_path, ttl_seconds=self.lock_ttl, wait_seconds=self.lock_wait):
            for sha, why in blobs.items():
                record = {"sha256": sha, "erased_at": datetime.now(UTC).isoformat(timespec="seconds"), **why}
                self._put(self._erased_path(sha), json.dumps(record, indent=1).encode())
                if self.fs.exists(self.blob_path(sha)):
                    self._call("delete a blob", self.fs.rm, self.blob_path(sha))

    def erased(self, sha: str) -> dict[str, Any] | None:
        """What `erase` recorded of blob `sha`, or None when it was never erased."""
        try:
            body = json.loads(self._call("read an erasure record", self.fs.cat_file, self._erased_path(sha)))
        except (FileNotFoundError, ValueError):
            return None
        return body if isinstance(body, dict) else {}

    def erased_blobs(self) -> set[str]:
        """The sha256 of every blob `erase` deleted (one listing)."""
        try:
            names = self._call("list erased blobs", self.fs.ls, f"{self.root}/erased", False)
        except FileNotFoundError:
            return set()
        return {str(n).rsplit("/", 1)[-1].removesuffix(".json") for n in names}

    def _erased_path(self, sha: str) -> str:
        return f"{self.root}/erased/{sha}.json"

    def pull(self, version: str, out: Path, progress: Progress | None = None) -> PullResult:
        """Write a version's pairs into out/images and out/masks, and its splits into out/splits.json.

        Only missing or damaged files are fetched, and every byte is verified. The manifest is
        checked whole first, so a manifest that names an unsafe path writes nothing at all.
        """
        from wms.data.pull import pull_version

        return pull_version(self, version, out, progress)


def open_store(project: Project) -> DatasetStore:
    """The store named by `store.url`; a plain path is relative to the project root."""
    cfg = project.settings.store
    url = cfg.url if "://" in cfg.url else str(project.path(cfg.url))
    return DatasetStore(
        url,
        val_fraction=project.settings.data.val_fraction,
        test_fraction=project.settings.data.test_fraction,
        lock_ttl_seconds=cfg.lock_ttl_seconds,
        lock_wait_seconds=cfg.lock_wait_seconds,
        workers=cfg.workers,
    )
