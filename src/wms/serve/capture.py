"""Keeping some production photos for labelling: opt-in, rate-limited, capped, never in the way.

    wms serve --set serve.capture=uncertain      # photos the model is unsure of (score >= capture_threshold)
    wms serve --set serve.capture=sample         # a random capture_sample_rate of all photos

Each capture is a pair in the dataset layout, so the inbox can be validated, corrected and
submitted like any batch (`wms data validate .wms/inbox`):

    <inbox>/images/<id>.jpg    the photo after EXIF orientation, re-encoded without its metadata
    <inbox>/masks/<id>.png     the predicted mask (0/255), a pre-label to correct
    <inbox>/meta/<id>.json     time, model version, uncertainty, size, sha256 of the upload

`<id>` is the first 16 hex digits of the upload's sha256, so a photo sent twice is kept once.
The metadata file is written last: a capture without one is incomplete. No client address,
file name or header is kept. Files are written aside and renamed into place (an S3 PUT is
atomic by itself), after the response has been sent, in a worker thread; a failure is logged
and counted, never returned to the client. A token bucket admits at most
`capture_per_minute` captures a minute (bursts up to that many, at least one: 0.5 is one
every two minutes); when the inbox holds `capture_max_files` photos or `capture_max_mb` MB,
capturing stops, with one log line. While it is full, a photo worth keeping has the inbox
measured again once a minute (FULL_RECHECK_SECONDS) at most: once photos are moved out,
capturing resumes by itself, with a line, without a restart. The inbox is measured again
before every capture, so replicas of the service that share it keep to the caps together
(within the captures they write at the same moment). At most WRITERS captures are written at
once: while a slow or hung store holds them, a later one waits a second for its turn, then is
dropped and counted as busy, so captures never pile up in memory (each holds its photo,
decoded) nor take the worker threads the server needs to receive uploads over 1 MB.

A folder inbox can be a spool that something else empties into the real inbox: in the cluster,
the pods write to a folder of their node and the node sends the complete captures on to S3
(infrastructure/scripts/capture-upload.sh), so that no pod holds cloud credentials. The node
writes `<spool>/upstream.json` after each round, `{"inbox", "photos", "bytes"}`: what the inbox
it feeds holds. The caps count it with what the spool still holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from wms.config import ServeSettings
from wms.files import put_file
from wms.uncertainty import Assessment

log = logging.getLogger(__name__)
MB = 1024 * 1024
SUFFIXES = {"images": ".jpg", "masks": ".png", "meta": ".json"}  # <inbox>/<kind>/<id><suffix>
KINDS = tuple(SUFFIXES)


def capture_files(pid: str) -> dict[str, str]:
    """The files of capture `pid` in the inbox, by kind: `images/<id>.jpg` and so on."""
    return {kind: f"{kind}/{pid}{suffix}" for kind, suffix in SUFFIXES.items()}


JPEG_QUALITY = 95  # a photo to label again: close to the upload, a fraction of a PNG's size
WRITERS = 2  # captures written at once; a write takes milliseconds unless the store hangs
WRITER_WAIT_S = 1.0  # how long a capture waits for a writer before it is dropped as busy
TAKEN_KEPT = 100_000  # ids of captures kept in memory against repeats (a few MB)
FULL_RECHECK_SECONDS = 60.0  # while the inbox is full, how often a photo worth keeping measures it again
UPSTREAM = "upstream.json"  # in a spool: what the inbox it feeds holds (see above)


class TokenBucket:
    """`per_minute` tokens a minute, at most `per_minute` stored (the largest burst), but at least one.

    A take needs a whole token, so a bucket holding fewer than one would never give any: with
    0.5 a minute it holds one, which comes back every two minutes. 0 gives none.
    """

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        capacity = max(1.0, per_minute) if per_minute > 0 else 0.0
        self.rate, self.capacity, self.clock = per_minute / 60, capacity, clock
        self.tokens, self.stamp = capacity, clock()
        self.lock = threading.Lock()

    def take(self) -> bool:
        """One token if there is one."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


@dataclass(frozen=True)
class Captured:
    """What one prediction leaves for the inbox."""

    upload: bytes
    image: Image.Image
    mask_png: bytes
    uncertainty: Assessment
    foreground_fraction: float
    reason: str


class Inbox:
    """A folder or an S3 prefix (fsspec) that files are put into whole."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True, use_listings_cache=False)
        self.root = root.rstrip("/")
        self.upstream = ""  # the inbox this one is a spool for, as its upstream.json last named it

    @property
    def name(self) -> str:
        """The inbox, for log lines: the spool's upstream too when it has one."""
        return f"{self.upstream} (through {self.url})" if self.upstream else self.url

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def exists(self, relative: str) -> bool:
        return bool(self.fs.exists(self.path(relative)))

    def put(self, relative: str, data: bytes) -> None:
        put_file(self.fs, self.path(relative), data)

    def usage(self, skip: frozenset[str] = frozenset()) -> tuple[int, int]:
        """Photos (metadata files) and bytes already in the inbox, but for the ids in `skip`."""
        count = total = 0
        for kind in KINDS:
            try:
                sizes = self.fs.find(self.path(f"{kind}/"), detail=True)
            except FileNotFoundError:
                continue
            for path, info in sizes.items():
                if path.endswith(".tmp") or path.rsplit("/", 1)[-1].split(".")[0] in skip:
                    continue
                total += int(info.get("size") or 0)
                count += kind == "meta"
        photos, size = self._upstream()
        return count + photos, total + size

    def _upstream(self) -> tuple[int, int]:
        """What the inbox this spool feeds holds, by its upstream.json; (0, 0) when it has none."""
        try:
            report = json.loads(self.fs.cat_file(self.path(UPSTREAM)))
            photos, size = int(report["photos"]), int(report["bytes"])
            self.upstream = str(report.get("inbox") or "")
        except FileNotFoundError:
            self.upstream = ""  # no spool (any more): the log lines name this inbox alone
            return 0, 0
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("%s/%s is unreadable (%s): the caps count this folder alone", self.url, UPSTREAM, exc)
            self.upstream = ""
            return 0, 0
        return max(photos, 0), max(size, 0)


class Capture:
    """Decides, in the request, whether to keep a photo; writes it later, in a worker thread."""

    def __init__(
        self,
        settings: ServeSettings,
        model_version: str,
        threshold: float,
        count: Callable[[str], None],
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.model_version, self.threshold = settings, model_version, threshold
        self.count = count  # outcome -> the metrics counter
        self.rng = rng or random.Random()
        self.bucket = TokenBucket(settings.capture_per_minute)
        self.max_files, self.max_bytes = settings.capture_max_files, int(settings.capture_max_mb * MB)
        self.lock = threading.Lock()
        self.inbox: Inbox | None = None
        self.writing: dict[str, int] = {}  # id -> bytes of the captures this process is writing
        # ids written (or being written) by this process, oldest first: a photo sent again after
        # its capture was moved out is not kept twice; the oldest go past TAKEN_KEPT ids, as a
        # service that runs for months, its inbox emptied now and then, would hold them all.
        self.taken: dict[str, None] = {}
        self.full, self.full_checked, self.clock = False, 0.0, clock  # when the inbox was last found full
        self.writers = threading.BoundedSemaphore(WRITERS)

    @property
    def enabled(self) -> bool:
        return self.settings.capture != "off"

    def wants(self, uncertainty: Assessment) -> str | None:
        """The reason to keep this prediction's photo, or None; cheap enough for the request."""
        mode = self.settings.capture
        if mode == "uncertain":
            reason = "uncertain" if uncertainty.score >= self.settings.capture_threshold else None
        elif mode == "sample":
            reason = "sample" if self.rng.random() < self.settings.capture_sample_rate else None
        else:
            return None
        if reason is None:
            return None
        if self.full and self.clock() - self.full_checked < FULL_RECHECK_SECONDS:
            self.count("full")
            return None
        if not self.bucket.take():
            self.count("rate_limited")
            return None
        return reason

    def write(self, item: Captured) -> None:
        """Put one capture into the inbox; logs and counts a failure instead of raising."""
        if not self.writers.acquire(timeout=WRITER_WAIT_S):
            self.count("busy")  # the store is slow: drop this one rather than wait on it
            return
        try:
            self.count(self._write(item))
        except Exception as exc:  # a full disk, a lost S3 connection: the service carries on
            log.warning("capture failed, the photo was not kept: %s", exc)
            self.count("failed")
        finally:
            self.writers.release()

    def _write(self, item: Captured) -> str:
        sha = hashlib.sha256(item.upload).hexdigest()
        pid = sha[:16]
        files = capture_files(pid)
        buffer = io.BytesIO()
        item.image.save(buffer, "JPEG", quality=JPEG_QUALITY)  # no exif=: location and camera stay out
        photo = buffer.getvalue()
        meta = json.dumps(
            {
                "id": pid,
                "captured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "reason": item.reason,
                "model_version": self.model_version,
                "threshold": self.threshold,
                "uncertainty": item.uncertainty.to_dict(),
                "width": item.image.width,
                "height": item.image.height,
                "foreground_fraction": round(item.foreground_fraction, 6),
                "upload_sha256": sha,
                "upload_bytes": len(item.upload),
                "image": files["images"],
                "mask": files["masks"],
            },
            indent=2,
        ).encode()
        size = len(photo) + len(item.mask_png) + len(meta)
        with self.lock:
            if self.inbox is None:
                self.inbox = Inbox(self.settings.capture_dir)
            if pid in self.taken or self.inbox.exists(files["meta"]):
                return "duplicate"
            # Read for every capture: other replicas of the service fill the same inbox. Captures
            # being written here count whole, and their files already written are left out.
            stored, stored_bytes = self.inbox.usage(frozenset(self.writing))
            count, total = stored + len(self.writing), stored_bytes + sum(self.writing.values())
            if count + 1 > self.max_files or total + size > self.max_bytes:
                if not self.full:
                    log.warning(
                        "capture stopped: the inbox %s holds %d photos, %.1f MB (serve.capture_max_files "
                        "%d, serve.capture_max_mb %g); move photos out and it captures again within "
                        "a minute",
                        self.inbox.name,
                        count,
                        total / MB,
                        self.max_files,
                        self.settings.capture_max_mb,
                    )
                self.full, self.full_checked = True, self.clock()
                return "full"
            if self.full:
                self.full = False
                log.warning(
                    "capture resumed: the inbox %s holds %d photos, %.1f MB",
                    self.inbox.name,
                    count,
                    total / MB,
                )
            self.writing[pid] = size  # concurrent writes see it
            self.taken[pid] = None
            if len(self.taken) > TAKEN_KEPT:
                del self.taken[next(iter(self.taken))]
        try:
            self.inbox.put(files["images"], photo)
            self.inbox.put(files["masks"], item.mask_png)
            self.inbox.put(files["meta"], meta)  # last: it marks the capture complete
        except Exception:
            with self.lock:
                self.taken.pop(pid, None)
            raise
        finally:
            with self.lock:
                del self.writing[pid]
        return "written"


def describe(settings: ServeSettings) -> dict[str, Any]:
    """What /model tells clients (and the web page its users) about capture."""
    if settings.capture == "off":
        return {"mode": "off"}
    return {"mode": settings.capture, "per_minute": settings.capture_per_minute}
