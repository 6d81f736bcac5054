"""A lease lock on any fsspec filesystem: one writer at a time, and a crashed writer's lock expires.

Taking over a lock never deletes anything. The lock `<name>.json` is a folder of numbered
generations, and the newest generation is the lock:

    <name>/0000000007.json       generation 7: owner, token, expires_at
    <name>/0000000007.released   written when generation 7 lets go

The newest generation is free once it is released or expired (its writer died). A writer
takes a free lock by creating the next generation with an exclusive create, which exactly
one writer wins: on a local folder a complete file is hard-linked into place (`os.link`
fails when the name exists, and readers never see a half-written file), on S3 `open(...,
"xb")` is a conditional PUT (`If-None-Match: *`) that S3 refuses when the key exists. The
winner then checks that no newer generation exists, since a writer with an old view can
only re-create a generation that is already below the newest; such a writer backs off.

Why: the earlier design read an expired lock file and deleted it, and read-then-delete can
delete a lock another writer has just created, so two writers could both hold it. (A plain
`lock.json` file left by that design is ignored.)

Renewal rewrites only the holder's own generation and fails once a newer one exists, so a
holder that stalled past its expiry learns at its next renewal that it lost the lock. Only
a holder removes old generations, and only those below its own. Expiry is wall-clock UTC:
writers on different machines need roughly synchronised clocks (NTP) and a TTL far longer
than their skew.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from wms.data.backend import store_errors
from wms.errors import BackendError
from wms.files import put_file
from wms.times import parse_time

_GENERATION = re.compile(r"(\d{10})\.(json|released)")
_LONG_AGO = datetime.min.replace(tzinfo=UTC).isoformat()


class LeaseHeld(BackendError):
    """Another holder has the lock and did not let go in time; `holder` is its lock file."""

    def __init__(self, message: str, holder: dict[str, str]) -> None:
        super().__init__(message)
        self.holder = holder


def _now() -> datetime:
    return datetime.now(UTC)


def default_owner() -> str:
    """Who holds the lock, as a person reading the error would want to know."""
    return f"{os.environ.get('USER', 'unknown')}@{socket.gethostname()} pid {os.getpid()}"


def left_by_dead_process(holder: dict[str, str], owner_prefix: str) -> bool:
    """Whether the lock is one `owner_prefix` took, left by its process on this machine that died
    (kill -9, a crash): its owner can take it over at once instead of waiting for it to expire.
    A process of it that still lives, or one on another machine, keeps it."""
    owner = holder.get("owner", "")
    if not owner.startswith(owner_prefix):
        return False
    match = re.search(r"@(\S+) pid (\d+)\)$", owner)
    if match is None or match[1] != socket.gethostname():
        return False  # another machine's process: only the lock's expiry tells
    try:
        os.kill(int(match[2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def lock_folder(path: str) -> str:
    """The folder holding the generations of the lock named `path` (`.../lock.json` -> `.../lock`)."""
    return path.removesuffix(".json")


@contextmanager
def lease(
    fs: Any,
    path: str,
    owner: str | None = None,
    ttl_seconds: float = 900,
    wait_seconds: float = 0,
    poll_seconds: float = 0.2,
    on_wait: Callable[[dict[str, str]], None] | None = None,
    take_over: Callable[[dict[str, str]], bool] | None = None,
) -> Iterator[dict[str, str]]:
    """Hold the lock at `path` for the block; wait up to `wait_seconds` for another holder.

    `on_wait(holder)` is called once when the lock is taken and this caller starts waiting.
    A holder for which `take_over(holder)` is true counts as gone (a resumed pipeline run
    takes the lock its own dead process left).
    """
    folder = lock_folder(path)
    body = {"owner": owner or default_owner(), "token": uuid.uuid4().hex, "expires_at": "", "generation": ""}
    deadline = time.monotonic() + wait_seconds
    waiting = False
    # A local folder must exist; on S3 there are no folders, and the listing below says why
    # the store cannot be reached, if it cannot.
    with suppress(BackendError), store_errors(f"make the lock folder {folder}"):
        fs.makedirs(folder, exist_ok=True)
    while True:
        held, released = _generations(fs, folder)
        top = max(held, default=0)
        holder = _read(fs, _file(folder, top, "json")) if top else None
        gone = holder is not None and (_expired(holder) or (take_over is not None and take_over(holder)))
        if top == 0 or top in released or gone:
            body["generation"] = f"{top + 1:010d}"
            body["expires_at"] = (_now() + timedelta(seconds=ttl_seconds)).isoformat()
            if _create(fs, _file(folder, top + 1, "json"), body) and _newest(fs, folder) == top + 1:
                break
            continue  # another writer won this generation, or our view was old: look again
        if holder is None:
            continue  # the newest generation vanished between listing and reading (removed by hand)
        if time.monotonic() >= deadline:
            raise LeaseHeld(
                f"the dataset store is locked by {holder.get('owner', '?')} "
                f"until {holder.get('expires_at', '?')}; wait for that writer, or if it died "
                f"create the empty file {_file(folder, top, 'released')} to free it now "
                "(the lock also expires by itself)",
                holder,
            )
        if on_wait is not None and not waiting:
            on_wait(holder)
        waiting = True
        time.sleep(poll_seconds)
    generation = int(body["generation"])
    _collect(fs, folder, generation)
    try:
        yield body
    except BaseException:
        with suppress(BackendError):  # do not hide the error that ended the block; the lock expires
            _put(fs, _file(folder, generation, "released"), body["token"].encode())
        raise
    _put(fs, _file(folder, generation, "released"), body["token"].encode())


def renew(fs: Any, path: str, body: dict[str, str], ttl_seconds: float) -> bool:
    """Push a held lock's expiry to now + `ttl_seconds`; False when the lock is no longer ours.

    Call it well before the lock expires (a third of the TTL is plenty): a writer may take
    an expired lock at any time, and the old holder only learns so at its next renewal. An
    expired lock that nobody has taken yet is still renewed.
    """
    folder = lock_folder(path)
    generation = int(body.get("generation") or 0)
    held, released = _generations(fs, folder)
    if not generation or max(held, default=0) != generation or generation in released:
        return False
    current = _read(fs, _file(folder, generation, "json"))
    if current is None or current.get("token") != body["token"]:
        return False
    body["expires_at"] = (_now() + timedelta(seconds=ttl_seconds)).isoformat()
    _put(fs, _file(folder, generation, "json"), json.dumps(body).encode())
    return True


def _file(folder: str, generation: int, kind: str) -> str:
    return f"{folder}/{generation:010d}.{kind}"


def _entries(fs: Any, folder: str) -> list[tuple[int, str, str]]:
    """(generation, "json" or "released", path) for every generation file in `folder`."""
    fs.invalidate_cache(folder)
    try:
        with store_errors(f"list the locks in {folder}"):
            names = fs.ls(folder, detail=False)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _GENERATION.fullmatch(str(name).rstrip("/").rsplit("/", 1)[-1])
        if match:
            found.append((int(match[1]), match[2], str(name)))
    return found


def _generations(fs: Any, folder: str) -> tuple[set[int], set[int]]:
    """The generations present in `folder`, and those of them released."""
    entries = _entries(fs, folder)
    held = {g for g, kind, _ in entries if kind == "json"}
    return held, {g for g, kind, _ in entries if kind == "released"}


def _newest(fs: Any, folder: str) -> int:
    return max(_generations(fs, folder)[0], default=0)


def _read(fs: Any, path: str) -> dict[str, str] | None:
    try:
        body = json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("expires_at"), str):
        # Files appear whole, so this one was damaged or written by hand: treat it as expired.
        return {"owner": "?", "token": "", "expires_at": _LONG_AGO}
    return {str(k): str(v) for k, v in body.items()}


def _expired(holder: dict[str, str]) -> bool:
    expires = parse_time(holder["expires_at"])
    return expires is None or expires < _now()


def _write_aside(fs: Any, path: str, data: bytes) -> tuple[str, str]:
    """A local file's real path, and a temporary file beside it already holding `data`."""
    target = fs._strip_protocol(path)
    tmp = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    return target, tmp


def _create(fs: Any, path: str, body: dict[str, str]) -> bool:
    """Create `path` holding `body` unless it exists; True for the one writer that created it."""
    data = json.dumps(body).encode()
    try:
        with store_errors(f"take the lock {path}", "; check that the store is writable"):
            if isinstance(fs, LocalFileSystem):
                target, tmp = _write_aside(fs, path, data)
                try:
                    os.link(tmp, target)  # atomic, and fails when the name exists
                finally:
                    os.unlink(tmp)
            else:
                with fs.open(path, "xb") as fh:  # S3: PUT with If-None-Match: *
                    fh.write(data)
    except FileExistsError:
        return False
    return True


def _put(fs: Any, path: str, data: bytes) -> None:
    """Write `path` whole: readers see the old or the new bytes, never a part."""
    with store_errors(f"write the lock {path}", "; check that the store is writable"):
        put_file(fs, path, data)


def _collect(fs: Any, folder: str, generation: int) -> None:
    """Remove the generations below `generation` (only its holder calls this)."""
    for old, _, name in _entries(fs, folder):
        if old < generation:
            with suppress(OSError):  # tidying only; a leftover generation is harmless
                fs.rm_file(name)
