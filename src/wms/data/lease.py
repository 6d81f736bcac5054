"""A lease lock on any fsspec filesystem: one writer at a time, and a crashed writer's lock expires.

The lock is a small JSON file created with exclusive-create (`xb`): the local filesystem
and S3 (a conditional PUT, `If-None-Match: *`) both refuse to create it when it exists,
so two writers can never both believe they hold it.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from wms.errors import BackendError


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


@contextmanager
def lease(
    fs: Any,
    path: str,
    owner: str | None = None,
    ttl_seconds: float = 900,
    wait_seconds: float = 0,
    poll_seconds: float = 0.2,
    on_wait: Callable[[dict[str, str]], None] | None = None,
) -> Iterator[dict[str, str]]:
    """Hold the lock at `path` for the block; wait up to `wait_seconds` for another holder.

    `on_wait(holder)` is called once when the lock is taken and this caller starts waiting.
    """
    token = uuid.uuid4().hex
    body = {
        "owner": owner or default_owner(),
        "token": token,
        "expires_at": (_now() + timedelta(seconds=ttl_seconds)).isoformat(),
    }
    deadline = time.monotonic() + wait_seconds
    waiting = False
    with suppress(OSError):  # a local folder must exist; on S3 there are no folders
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    while True:
        try:
            with fs.open(path, "xb") as fh:
                fh.write(json.dumps(body).encode())
            break
        except FileExistsError:
            holder = _read(fs, path)
            if holder is None or datetime.fromisoformat(holder["expires_at"]) < _now():
                _remove_if_same(fs, path, holder)  # expired: its writer died
                continue
            if time.monotonic() >= deadline:
                raise LeaseHeld(
                    f"the dataset store is locked by {holder.get('owner', '?')} "
                    f"until {holder['expires_at']}; "
                    f"wait for that writer, or if it died remove {path} (the lock also expires by itself)",
                    holder,
                ) from None
            if on_wait is not None and not waiting:
                on_wait(holder)
            waiting = True
            time.sleep(poll_seconds)
    try:
        yield body
    finally:
        _remove_if_same(fs, path, body)


def renew(fs: Any, path: str, body: dict[str, str], ttl_seconds: float) -> bool:
    """Push a held lock's expiry to now + `ttl_seconds`; False when the lock is no longer ours.

    Not atomic: call it well before the lock expires (a third of the TTL is plenty), so no
    other writer can have taken an expired lock in between.
    """
    current = _read(fs, path)
    if current is None or current.get("token") != body["token"]:
        return False
    body["expires_at"] = (_now() + timedelta(seconds=ttl_seconds)).isoformat()
    with fs.open(path, "wb") as fh:
        fh.write(json.dumps(body).encode())
    return True


def _read(fs: Any, path: str) -> dict[str, str] | None:
    try:
        return dict(json.loads(fs.cat_file(path)))
    except FileNotFoundError:
        return None
    except ValueError:
        # A lock file cut short by a crash: treat it as expired.
        return {"expires_at": datetime.min.replace(tzinfo=UTC).isoformat(), "token": ""}


def _remove_if_same(fs: Any, path: str, holder: dict[str, str] | None) -> None:
    current = _read(fs, path)
    if current is not None and (holder is None or current.get("token") == holder.get("token")):
        with suppress(FileNotFoundError):
            fs.rm_file(path)
