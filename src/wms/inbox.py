"""Unlabelled photos: the service's capture inbox, or any folder of photos.

The service's capture (wms.serve.capture, `serve.capture_dir`) holds, per captured photo,
`images/<id>.jpg`, `masks/<id>.png` (the served model's mask, a pre-label) and `meta/<id>.json`
(`captured_at` ISO 8601, `model_version`, `uncertainty`, `width`, `height`, ...). A plain folder may
hold `<name>.<ext>` photos with `<name>.mask.png` and `<name>.json` beside them. Readers here
rely on nothing else: a file that is not a photo is skipped and counted, a photo without
metadata is still a photo, and metadata that cannot be read is treated as absent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wms.data.backend import store_errors
from wms.data.pairs import IMAGE_SUFFIXES
from wms.errors import BackendError, UsageError
from wms.times import parse_time

MASK_SUFFIX = ".mask.png"  # the capture's pre-label beside each photo
PHOTO_SUFFIXES = (*IMAGE_SUFFIXES, ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Photo:
    """One unlabelled photo and what the capture recorded about it."""

    path: Path
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def time(self) -> datetime:
        """When it was captured: the metadata's `captured_at` (what the capture writes) or `time`,
        else the file's modification time (UTC), which a copy of the inbox resets."""
        parsed = parse_time(str(self.meta.get("captured_at") or self.meta.get("time") or ""))
        return parsed or datetime.fromtimestamp(self.path.stat().st_mtime, UTC)


@dataclass
class Scan:
    """The photos found in a folder, and the files passed over with why."""

    folder: Path
    photos: list[Photo]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    without_meta: int = 0
    source: str = ""  # where the photos came from, when `folder` is a copy (an s3:// inbox)

    def summary(self) -> str:
        """e.g. '12 photos in .wms/inbox (3 files skipped: 2 not a photo, 1 unreadable)'."""
        text = f"{len(self.photos)} photo(s) in {self.source or self.folder}"
        if self.skipped:
            reasons: dict[str, int] = {}
            for _, why in self.skipped:
                reasons[why] = reasons.get(why, 0) + 1
            detail = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
            text += f" ({len(self.skipped)} file(s) skipped: {detail})"
        return text


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _meta(path: Path) -> dict[str, Any] | None:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def scan_photos(folder: Path, source: str = "") -> Scan:
    """The photos directly in `folder` (or in its images/: the capture inbox, a dataset), by name.

    Hidden files, pre-label masks and metadata files are not photos; anything else that is
    not a photo by its suffix is skipped and counted. Pixels are not decoded here. `source`
    names where a copied folder came from (an s3:// inbox), for the summary.
    """
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise UsageError(f"{folder} {what}; name a folder of photos (or the capture inbox)")
    meta_dir, files = folder, _files(folder)
    has_photos = any(p.suffix.lower() in PHOTO_SUFFIXES for p in files)
    if not has_photos and (folder / "images").is_dir():  # a README beside images/ is no photo
        folder, meta_dir = folder / "images", folder / "meta"  # the capture's layout, a dataset's
        files = _files(folder)
    scan = Scan(folder, [], source=source)
    metadata = {p.stem for p in _files(meta_dir) if p.suffix == ".json"} if meta_dir.is_dir() else set()
    photo_stems = {p.stem for p in files if p.suffix.lower() in PHOTO_SUFFIXES}
    for path in files:
        if path.name.lower().endswith(MASK_SUFFIX) or (path.suffix == ".json" and path.stem in photo_stems):
            continue  # the capture's own companions of a photo
        if path.suffix.lower() not in PHOTO_SUFFIXES:
            scan.skipped.append((path, "not a photo"))
            continue
        meta = _meta(meta_dir / f"{path.stem}.json") if path.stem in metadata else None
        if meta is None:
            scan.without_meta += 1
        scan.photos.append(Photo(path, _sha256(path), meta or {}))
    return scan


def local_inbox(capture_dir: str, root: Path) -> Path:
    """The capture inbox as a local folder (`serve.capture_dir`, relative to the project root)."""
    if "://" in capture_dir:
        raise UsageError(
            f"serve.capture_dir is {capture_dir}: copy it here first (e.g. aws s3 sync {capture_dir} inbox) "
            "and pass --from inbox-folder"
        )
    path = Path(capture_dir).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_dir():
        raise UsageError(
            f"the capture inbox {path} does not exist yet: nothing was captured (serve.capture is off "
            "by default); pass --from DIR, a folder of photos"
        )
    return path


def copy_inbox(
    url: str,
    dest: Path,
    progress: Callable[[int], None] | None = None,
    expect: Callable[[int], None] | None = None,
) -> Path:
    """A copy in `dest` of the photos and metadata of the capture inbox at `url` (s3://...).

    The pre-label masks stay behind (`wms data suggest` draws its own with the model it is
    given; `wms monitor drift` reads none); so do files still being written (`.tmp`). The files
    come down concurrently; `expect` hears how many, `progress` each one done. An inbox that
    holds nothing yet gives an empty copy (no photos: a quiet window), one that cannot be read
    one line saying so: a UsageError where the bucket does not exist (or s3fs is missing), a
    BackendError where AWS refuses (no credentials, access denied) or does not answer.
    """
    import fsspec
    from fsspec.callbacks import Callback

    class Counted(Callback):
        def relative_update(self, inc: int = 1) -> None:  # once per file fetched
            if progress is not None:
                progress(inc)

    try:
        # AWS refusing (AccessDenied, no credentials) or not answering is a backend failure (exit 1)
        with store_errors(
            f"read the capture inbox {url}",
            "; check the AWS credentials, that they may list and read that prefix, and that S3 answers",
        ):
            fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True, use_listings_cache=False)
            root = root.rstrip("/")
            remote, local = [], []
            for kind in ("images", "meta"):
                (dest / kind).mkdir(parents=True, exist_ok=True)
                for path in fs.find(f"{root}/{kind}"):  # [] where nothing was captured; no bucket raises
                    name = path.rsplit("/", 1)[-1]
                    if not name.endswith(".tmp") and not name.startswith("."):
                        remote.append(path)
                        local.append(str(dest / kind / name))
            if expect is not None:
                expect(len(remote))
            if remote:
                fs.get(remote, local, callback=Counted())
    except ImportError as exc:
        raise UsageError(f"serve.capture_dir {url} needs {exc.name}: pip install 'wms[s3]'") from None
    except BackendError:
        raise
    except Exception as exc:  # no such bucket, a name S3 refuses: serve.capture_dir is wrong
        raise UsageError(
            f"cannot read the capture inbox {url}: {exc}; check that the bucket exists "
            "(serve.capture_dir, or --from), and the AWS credentials"
        ) from None
    return dest


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
