"""The lease lock: one holder at a time, even when writers race for an expired lock (local and S3)."""

from __future__ import annotations

import json
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import fsspec
import pytest

from wms.data import lease as lease_module
from wms.data.lease import LeaseHeld, lease, lock_folder, renew

Lock = tuple[Any, str]  # a filesystem and the lock's path on it


@pytest.fixture(params=["local", "s3"])
def lock(request: pytest.FixtureRequest, tmp_path: Path) -> Lock:
    if request.param == "local":
        return fsspec.filesystem("file"), str(tmp_path / "lock.json")
    return _s3(), f"{request.getfixturevalue('s3_bucket')}/store/lock.json"


def _s3() -> Any:
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


def crashed(fs: Any, path: str, owner: str = "dead writer") -> None:
    """The lock as a writer that died long ago left it: generation 1, expired, never released."""
    body = {"owner": owner, "token": "dead", "expires_at": "2000-01-01T00:00:00+00:00", "generation": "1"}
    fs.makedirs(lock_folder(path), exist_ok=True)
    fs.pipe_file(f"{lock_folder(path)}/0000000001.json", json.dumps(body).encode())


def test_a_crashed_lock_is_taken_over(lock: Lock) -> None:
    fs, path = lock
    crashed(fs, path)
    with lease(fs, path, owner="next writer") as body:
        assert body["generation"] == "0000000002"
        # The new holder tidied the dead generation away; nobody else could have.
        assert [p.rsplit("/", 1)[-1] for p in fs.ls(lock_folder(path), detail=False)] == ["0000000002.json"]


def test_a_live_lock_makes_the_next_writer_wait_then_names_its_holder(lock: Lock) -> None:
    fs, path = lock
    seen: list[str] = []
    second = lease(fs, path, wait_seconds=0.3, poll_seconds=0.05, on_wait=lambda h: seen.append(h["owner"]))
    with lease(fs, path, owner="first writer"):
        with pytest.raises(LeaseHeld, match="locked by first writer") as caught, second:
            pytest.fail("two writers held the lock")
        assert caught.value.holder["owner"] == "first writer"
        assert caught.value.holder["expires_at"] > "2000"
        assert "released" in str(caught.value)  # says how to free it by hand
        assert seen == ["first writer"]  # told once, not at every poll
    release = threading.Event()
    # A released lock is taken at once and the waiter is never told anything.
    with lease(fs, path, on_wait=lambda h: release.set()) as body:
        assert not release.is_set() and body["generation"] == "0000000002"


def test_renew_moves_the_expiry_and_fails_after_a_takeover(lock: Lock) -> None:
    fs, path = lock
    with lease(fs, path, owner="slow writer", ttl_seconds=600) as slow:
        first = slow["expires_at"]
        assert renew(fs, path, slow, ttl_seconds=900)
        on_disk = json.loads(fs.cat_file(f"{lock_folder(path)}/{slow['generation']}.json"))
        assert on_disk["expires_at"] == slow["expires_at"] > first
        # The slow writer stalls past its expiry; another writer takes the lock over.
        on_disk["expires_at"] = "2000-01-01T00:00:00+00:00"
        fs.pipe_file(f"{lock_folder(path)}/{slow['generation']}.json", json.dumps(on_disk).encode())
        with lease(fs, path, owner="new writer", ttl_seconds=600) as new:
            assert not renew(fs, path, slow, ttl_seconds=900)
            assert renew(fs, path, new, ttl_seconds=900)
        # The slow writer letting go afterwards frees nothing of anyone else's.
    with lease(fs, path, owner="third writer") as third:
        assert third["generation"] == "0000000003"
        assert not renew(fs, path, slow, ttl_seconds=900)


def test_a_writer_with_an_old_view_backs_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs, path = fsspec.filesystem("file"), str(tmp_path / "lock.json")
    crashed(fs, path)
    real_read = lease_module._read
    others = ExitStack()
    stalled: list[str] = []

    def stalled_read(fs_: Any, file: str) -> dict[str, str] | None:
        body = real_read(fs_, file)
        if not stalled:  # once: while this writer looks at generation 1 ...
            stalled.append(file)
            with lease(fs, path, owner="second writer"):  # ... one takes generation 2 and lets go,
                pass
            others.enter_context(lease(fs, path, owner="third writer"))  # one takes 3, removing 2
        return body

    monkeypatch.setattr(lease_module, "_read", stalled_read)
    # It judged generation 1 expired, so it creates generation 2 (free again after the
    # clean-up), but a newer generation exists: it must not believe it holds the lock.
    with others, pytest.raises(LeaseHeld, match="locked by third writer"), lease(fs, path, owner="stalled"):
        pytest.fail("the stalled writer and the third writer both hold the lock")


def race(filesystems: list[Any], path: str, poll: float) -> tuple[int, list[str]]:
    """One thread per filesystem goes for the lock at once; returns the most ever inside, and outcomes."""
    writers = len(filesystems)
    inside, most = 0, 0
    count = threading.Lock()
    outcomes = ["never finished"] * writers
    start = threading.Barrier(writers)

    def writer(i: int) -> None:
        nonlocal inside, most
        fs = filesystems[i]
        start.wait()
        try:
            with lease(fs, path, owner=f"writer {i}", ttl_seconds=120, wait_seconds=60, poll_seconds=poll):
                with count:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.002)  # stay inside a moment, so an overlap would be seen
                with count:
                    inside -= 1
            outcomes[i] = "held"
        except LeaseHeld:
            outcomes[i] = "LeaseHeld"
        except Exception as exc:
            outcomes[i] = repr(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return most, outcomes


def test_writers_racing_for_an_expired_lock_never_both_hold_it(tmp_path: Path) -> None:
    fs = fsspec.filesystem("file")
    for round_ in range(100):
        path = str(tmp_path / f"round{round_}" / "lock.json")
        crashed(fs, path)
        most, outcomes = race([fs] * 4, path, poll=0.005)
        assert most == 1, f"round {round_}: {most} writers held the lock at once"
        assert set(outcomes) <= {"held", "LeaseHeld"} and "held" in outcomes, f"round {round_}: {outcomes}"


@pytest.mark.usefixtures("aws_env")
def test_writers_racing_for_an_expired_lock_on_s3_never_both_hold_it(s3_bucket: str) -> None:
    fs = _s3()
    writers = [_s3() for _ in range(3)]  # a client each, as separate machines would have
    for round_ in range(20):
        path = f"{s3_bucket}/round{round_}/lock.json"
        crashed(fs, path)
        most, outcomes = race(writers, path, poll=0.02)
        assert most == 1, f"round {round_}: {most} writers held the lock at once"
        assert set(outcomes) <= {"held", "LeaseHeld"} and "held" in outcomes, f"round {round_}: {outcomes}"
