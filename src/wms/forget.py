"""Forgetting a person's photo: what `wms data forget` does when someone asks to have it deleted.

The service names a captured photo by the first 16 hex digits of its upload's sha256 (`<id>`,
wms.serve.capture), and the photo keeps that name on its way to the dataset: `wms data suggest`
copies it into a labelling batch as `<id>.jpg`, `wms data from-labelstudio` writes the pair
`<id>`, which is pushed under data/incoming/ and ingested as a pair of that id. So the photo
the person sent (or its sha256, or the id) finds every copy WMS made of it:

- the capture inbox (`serve.capture_dir`, a folder or s3://): images/<id>.jpg, masks/<id>.png
  and meta/<id>.json are deleted;
- the dataset store: a version of the base without the pair is written, then the blobs of its
  photo and mask that no other pair holds are erased (DatasetStore.without, .erase): the
  versions that held it stay as they are, immutable, but can no longer be read whole;
- this machine's working copies (the pipeline's merged dataset, the training cache) go; another
  machine's go at its next pipeline run (wms.train.cache.forget_erased, the merge);
- this repository: the commits that added `<data.incoming>/images/<id>.*` are named, not
  changed, as a repository's history is shared with every clone.

The drawings MLflow runs keep of it are wms.forget_runs'. What is left to the operator is in
docs/labelling-and-drift.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from wms.data.backend import store_errors
from wms.data.manifest import hashes
from wms.data.store import DatasetStore
from wms.errors import UsageError
from wms.files import write_text_atomic
from wms.serve.capture import Inbox, capture_files
from wms.vcs.git import Git

CAPTURE_ID = re.compile(r"[0-9a-f]{16}")
BATCH_TASKS = "labelstudio.json"  # a labelling batch's import file (wms.suggest.write_batch)
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


def capture_id(photo: str) -> tuple[str, str | None]:
    """The capture id of `photo` (a file, the photo the person sent; its sha256; or the id), and
    the full sha256 of its bytes where `photo` gives it (None for an id)."""
    if CAPTURE_ID.fullmatch(photo):
        return photo, None
    if SHA256_HEX.fullmatch(photo):
        return photo.lower()[:16], photo.lower()
    path = Path(photo)
    if path.is_file():
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        return sha[:16], sha
    raise UsageError(
        f"{photo!r} is neither a file nor a photo's sha256 (64 hex digits) or capture id (16): "
        "name the photo the person sent, or the sha256 they gave (or a pair by name: --pair NAME)"
    )


def ids_to_forget(photos: list[str], pairs: list[str], manifests: dict[str, dict[str, Any]]) -> list[str]:
    """The pair ids to forget: each photo's capture id, and any stored pair whose photo is that
    photo byte for byte (pushed as it was, under a name of its own); each of `pairs` as it is,
    once a version of the store holds it (a mistyped name is refused, not reported as gone)."""
    by_photo: dict[str, list[str]] = {}
    for manifest in manifests.values():
        for pid, entry in manifest["pairs"].items():
            by_photo.setdefault(entry["image"]["sha256"], []).append(pid)
    ids = []
    for photo in photos:
        pid, sha = capture_id(photo)
        ids += [pid, *(by_photo.get(sha, []) if sha else [])]
    known = {pid for held in by_photo.values() for pid in held}
    for name in pairs:
        if name not in known:
            raise UsageError(
                f"no version of the dataset store holds a pair {name!r}: give the pair's name as its "
                "files have it (images/NAME.*), as `wms data pull` writes them"
            )
        ids.append(name)
    return list(dict.fromkeys(ids))


def open_inbox(url: str) -> Inbox:
    """The capture inbox at `url` (a folder or s3://), as the service writes it."""
    try:
        return Inbox(url)
    except ImportError as exc:
        raise UsageError(f"serve.capture_dir {url} needs {exc.name}: pip install 'wms[s3]'") from None


def delete_from_inbox(inbox: Inbox, ids: list[str], dry_run: bool = False) -> dict[str, list[str]]:
    """Delete each id's capture (photo, pre-label, metadata) from the inbox; the files deleted
    (with `dry_run`, found), by id. An inbox that does not exist holds none."""
    deleted: dict[str, list[str]] = {i: [] for i in ids}
    with store_errors(
        f"delete from the capture inbox {inbox.url}", "; check that the credentials may delete there"
    ):
        for pid in ids:
            for relative in capture_files(pid).values():
                if inbox.exists(relative):
                    if not dry_run:
                        with suppress(FileNotFoundError):  # deleted meanwhile: as good
                            inbox.fs.rm(inbox.path(relative))
                    deleted[pid].append(relative)
    return deleted


@dataclass
class InStore:
    """Where the dataset store holds one photo: the versions with a pair of its id, the blobs of
    that pair (photo and mask), and those of them another pair holds too (an all-black mask)."""

    versions: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)  # the versions holding it in their val split
    stored: list[str] = field(default_factory=list)  # its own blobs the store still holds: to erase

    @property
    def own(self) -> list[str]:
        """The pair's blobs that no other pair holds."""
        return [sha for sha in self.blobs if sha not in self.shared]


def find_in_store(
    store: DatasetStore, ids: list[str], manifests: dict[str, dict[str, Any]]
) -> dict[str, InStore]:
    """For each id, where the store holds it, from every manifest (store.manifests()): a version
    left off main's line (a batch the gate refused) holds photos too, and a mask may be another
    pair's as well."""
    found = {pid: InStore() for pid in ids}
    elsewhere: set[str] = set()  # the blobs of the pairs that stay
    for version, manifest in sorted(manifests.items(), key=lambda vm: (vm[1]["created_at"], vm[0])):
        for pid, entry in manifest["pairs"].items():
            if pid not in found:
                elsewhere.update(hashes(entry))
                continue
            found[pid].versions.append(version)
            if entry["split"] == "val":
                found[pid].val.append(version)
            found[pid].blobs.extend(sha for sha in hashes(entry) if sha not in found[pid].blobs)
    for where in found.values():
        where.shared = [sha for sha in where.blobs if sha in elsewhere]
    present = store.stored_blobs(sha for where in found.values() for sha in where.own)
    for where in found.values():
        where.stored = [sha for sha in where.own if sha in present]
    return found


def forget_in_store(
    store: DatasetStore, base: str | None, found: dict[str, InStore]
) -> tuple[str | None, int]:
    """Write the version of `base` without the ids found in it (none where it holds none of them,
    or there is no base yet), then erase their own blobs that the store still holds. In that
    order, so that a run stopped halfway and run again finishes the job. Returns that version
    (None where none was written) and how many blobs were erased."""
    held = [pid for pid, where in found.items() if base in where.versions]
    version = store.without(base, held) if base and held else None
    erase = {
        sha: {"pair": pid, "versions": where.versions} for pid, where in found.items() for sha in where.stored
    }
    if erase:
        store.erase(erase)
    return version, len(erase)


def find_in_history(root: Path, incoming: Path | str, ids: list[str]) -> dict[str, list[str]] | None:
    """For each id, the commits of any branch here that added `<incoming>/images/<id>.*`; None
    where `root` is no git repository. One walk of the history, matched by name (a pair's name
    may hold what a pathspec reads as a pattern)."""
    git = Git(root)
    if not git.ok("rev-parse", "--git-dir"):
        return None
    found: dict[str, list[str]] = {pid: [] for pid in ids}
    added = ["--all", "--diff-filter=A", "--format=%x00%h", "--name-only", "--", f"{incoming}/images/"]
    log = git.run("-c", "core.quotePath=false", "log", *added)
    for block in log.split("\0")[1:]:
        commit, *paths = [line for line in block.splitlines() if line]  # a name may hold spaces
        for path in paths:
            pid = PurePosixPath(path).stem  # a pair's id, as wms.data.pairs reads it
            if pid in found and commit not in found[pid]:
                found[pid].append(commit)
    return found


def find_in_branches(
    root: Path, pointer: str, main: tuple[str, str], found: dict[str, InStore], fetch: bool = False
) -> dict[str, list[str]]:
    """For each id, the branches here (local and remote-tracking) whose `pointer` file names a
    version that holds it: a batch's pull request, opened before the forget, that would point
    main at it again. `main` (its branch and remote) is left out: the forget's pointer replaces it.
    With `fetch` (the GitHub host, where the pull requests' branches are), the remote's branches
    are fetched first, and those deleted there pruned: a pull request opened since this checkout
    last fetched is seen too."""
    named: dict[str, list[str]] = {pid: [] for pid in found}
    git = Git(root)
    if not git.ok("rev-parse", "--git-dir"):
        return named
    branch, remote = main
    if fetch and git.ok("remote", "get-url", remote):
        git.run("fetch", "--quiet", "--prune", remote)
    refs = git.run("for-each-ref", "--format=%(refname:short)", "refs/heads", "refs/remotes").splitlines()
    for ref in refs:
        if ref in (branch, f"{remote}/{branch}", remote) or ref.endswith("/HEAD"):
            continue
        try:
            version = json.loads(git.run("show", f"{ref}:{pointer}", check=False) or "null")["version"]
        except (ValueError, TypeError, KeyError):
            continue  # no pointer there, or not one: nothing it would bring back
        for pid, where in found.items():
            if version in where.versions:
                named[pid].append(ref)
    return named


def purge_bucket(
    inbox: Inbox,
    store: DatasetStore,
    ids: list[str],
    found: dict[str, InStore],
    drawings: list[str],
    dry_run: bool = False,
) -> int:
    """Delete the old versions a versioned bucket keeps of the pairs' capture files, of their own
    blobs in the store and of the run drawings (URLs) deleted (purge_old_versions); how many.
    Run again, it finds what a failed run left. A BackendError where the credentials may not
    (s3:DeleteObjectVersion)."""
    import fsspec

    captures = [inbox.path(relative) for pid in ids for relative in capture_files(pid).values()]
    blobs = [store.blob_path(sha) for where in found.values() for sha in where.own]
    hint = (
        "; S3 expires them after the bucket's noncurrent_version_days, or run this again with "
        "credentials that may delete them"
    )
    with store_errors("delete the old versions the bucket keeps", hint):
        count = purge_old_versions(inbox.fs, captures, dry_run) + purge_old_versions(store.fs, blobs, dry_run)
        if drawings:
            s3 = fsspec.filesystem("s3", skip_instance_cache=True)
            count += purge_old_versions(s3, drawings, dry_run)
        return count


def purge_old_versions(fs: Any, paths: list[str], dry_run: bool = False) -> int:
    """Delete every version a versioned S3 bucket keeps of each of `paths`: a deleted object
    stays there as a noncurrent version behind a delete marker, for the bucket's lifecycle rule
    to expire (90 days in infrastructure/terraform). How many versions (found, with `dry_run`);
    a folder keeps none. A refusal (no s3:DeleteObjectVersion) is the caller's to report."""
    if "s3" not in fs.protocol:
        return 0
    count = 0
    for path in paths:
        bucket, key, _ = fs.split_path(path)
        listed = fs.call_s3("list_object_versions", Bucket=bucket, Prefix=key)
        for kind in ("Versions", "DeleteMarkers"):  # the markers hold nothing: deleted, not counted
            for entry in listed.get(kind, []):
                if entry["Key"] != key:  # another object whose key starts with this one
                    continue
                if not dry_run:
                    fs.call_s3("delete_object", Bucket=bucket, Key=key, VersionId=entry["VersionId"])
                count += kind == "Versions"
    return count


def find_in_batches(folder: Path, ids: list[str]) -> dict[str, list[Path]]:
    """For each id, its files in the labelling batches under `folder` (what `wms data suggest
    --out` wrote: a folder with labelstudio.json beside images/): its photo and pre-label."""
    found: dict[str, list[Path]] = {pid: [] for pid in ids}
    for tasks in sorted(folder.rglob(BATCH_TASKS)):
        for sub in ("images", "prelabels"):
            files = sorted((tasks.parent / sub).iterdir()) if (tasks.parent / sub).is_dir() else []
            for path in files:
                if path.is_file() and path.stem in found:
                    found[path.stem].append(path)
    return found


def delete_from_batches(found: dict[str, list[Path]]) -> None:
    """Delete the files, and drop their tasks from each batch's labelstudio.json, which an import
    would otherwise show without a photo. ranking.csv and ranking.json keep their rows: scores,
    no photo."""
    paths = [path for held in found.values() for path in held]
    for path in paths:
        path.unlink(missing_ok=True)
    named = {pid for pid, held in found.items() if held}
    for batch in sorted({path.parent.parent for path in paths}):
        try:
            tasks = json.loads((batch / BATCH_TASKS).read_text())
            kept = [t for t in tasks if t.get("data", {}).get("name") not in named]
        except (OSError, ValueError, AttributeError):  # edited by hand into something else: left as it is
            continue
        if len(kept) < len(tasks):
            write_text_atomic(batch / BATCH_TASKS, json.dumps(kept, indent=1) + "\n")


def delete_local_copies(state_dir: Path, cache_dir: Path, ids: list[str], dry_run: bool = False) -> list[str]:
    """This machine's working copies of the pairs: their files in the pipeline's merged dataset
    (the `work` folder in the state folder), and the training cache's arrays (decoded photos of
    every dataset trained here, keyed by no pair: all go, and the next run decodes again). The
    paths deleted."""
    work = state_dir / "work" / "dataset"
    wanted = set(ids)  # by name, not by pattern: "IMG.*" would find the pair "IMG.v2" too
    paths = [
        p
        for kind in ("images", "masks")
        if (work / kind).is_dir()
        for p in sorted((work / kind).iterdir())
        if p.stem in wanted
    ]
    paths += sorted(cache_dir.glob("*.npy")) if cache_dir.is_dir() else []
    if not dry_run:
        for path in paths:
            path.unlink(missing_ok=True)
    return [str(p) for p in paths]
