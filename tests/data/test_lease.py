"""The lease lock: renewal while held, and the holder named to those who wait."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import fsspec
import pytest

from wms.data.lease import LeaseHeld, lease, renew


def test_renew_moves_the_expiry_and_fails_once_the_lock_is_lost(tmp_path: Path) -> None:
    fs = fsspec.filesystem("file")
    path = str(tmp_path / "lock.json")
    with lease(fs, path, ttl_seconds=5) as body:
        first = body["expires_at"]
        assert renew(fs, path, body, ttl_seconds=600)
        on_disk = json.loads(Path(path).read_text())
        assert on_disk["expires_at"] == body["expires_at"] > first
        Path(path).unlink()  # someone removed it (e.g. by hand, believing the writer dead)
        assert not renew(fs, path, body, ttl_seconds=600)


def test_a_waiter_is_told_who_holds_the_lock(tmp_path: Path) -> None:
    fs = fsspec.filesystem("file")
    path = str(tmp_path / "lock.json")
    seen: list[str] = []
    with lease(fs, path, owner="first writer"):
        with pytest.raises(LeaseHeld, match="locked by first writer") as caught:
            lease(
                fs, path, wait_seconds=0.2, poll_seconds=0.05, on_wait=lambda h: seen.append(h["owner"])
            ).__enter__()
        assert caught.value.holder["owner"] == "first writer"
        assert seen == ["first writer"]  # told once, not at every poll
    release = threading.Event()
    # A free lock is taken at once and the waiter is never told anything.
    with lease(fs, path, on_wait=lambda h: release.set()):
        assert not release.is_set()
