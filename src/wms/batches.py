"""Every pushed batch accounted for: one record per data-branch commit, kept in the dataset store.

    <store>/batches/<commit sha>.json   branch, status, attempts, the last run and what it said

A pipeline run on a data branch writes `running` once it holds the store's pipeline lock,
and its outcome when it ends. `wms pipeline sweep` (a schedule in CI) runs every data branch
whose head commit has no finished record, so a run that was cancelled, lost its runner or
never started is caught up. Statuses:

    promoted       merged into main: main's dataset.json and production pointer name it
    published      a pull request with the promotion is open (auto-merge)
    not-promoted   the gate kept production; the branch stays for review with its report
    rejected       the data is invalid or conflicts with main; push a fixed batch
    no-new-data    the batch holds nothing main's dataset does not have
    failed         the run broke (compute, network, a bug); the sweeper tries again
    running        a run is at it (or died: the sweeper finds out under the lock)
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from wms.errors import DataError

FINISHED = ("promoted", "published", "not-promoted", "rejected", "no-new-data")
MAX_ATTEMPTS = 3
SHA = re.compile(r"[0-9a-f]{40}")


def check_sha(sha: str) -> str:
    """A full commit id, or a DataError (it becomes part of a path)."""
    if not SHA.fullmatch(sha):
        raise DataError(f"{sha!r} is not a full commit id (40 hex characters); pass `git rev-parse BRANCH`")
    return sha


class BatchLedger:
    """The batch records of one dataset store."""

    def __init__(self, fs: Any, store_root: str) -> None:
        self.fs = fs
        self.root = f"{store_root}/batches"

    def _path(self, sha: str) -> str:
        return f"{self.root}/{check_sha(sha)}.json"

    def get(self, sha: str) -> dict[str, Any] | None:
        """The record of one commit, or None when no run ever held the lock for it."""
        try:
            return dict(json.loads(self.fs.cat_file(self._path(sha))))
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # a record cut short: treat the batch as never run

    def all(self) -> list[dict[str, Any]]:
        """Every record, oldest first."""
        try:
            names = [str(n) for n in self.fs.ls(self.root, detail=False)]
        except FileNotFoundError:
            return []
        records = [self.get(n.rsplit("/", 1)[-1].removesuffix(".json")) for n in names if n.endswith(".json")]
        return sorted((r for r in records if r), key=lambda r: str(r.get("started_at", "")))

    def _put(self, record: dict[str, Any]) -> None:
        record["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.fs.makedirs(self.root, exist_ok=True)
        self.fs.pipe_file(self._path(record["sha"]), (json.dumps(record, indent=1) + "\n").encode())

    def start(self, branch: str, sha: str, run_id: str) -> dict[str, Any]:
        """Mark the batch as being run by `run_id` (call it while holding the pipeline lock)."""
        old = self.get(sha) or {}
        record = {
            "branch": branch,
            "sha": sha,
            "status": "running",
            "run_id": run_id,
            "attempts": int(old.get("attempts", 0)) + 1,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "summary": "",
            "runs": [*old.get("runs", []), run_id],
        }
        self._put(record)
        return record

    def finish(self, sha: str, status: str, summary: str, **extra: Any) -> None:
        """Record how the batch's run ended."""
        record = self.get(sha) or {"sha": sha}
        record.update(status=status, summary=summary, **extra)
        self._put(record)


def is_finished(record: dict[str, Any] | None) -> bool:
    """Whether the batch needs no more runs."""
    return record is not None and record.get("status") in FINISHED


def gave_up(record: dict[str, Any] | None) -> bool:
    """Whether the sweeper stopped retrying a failing batch (its record says why)."""
    return (
        record is not None and record.get("status") == "failed" and record.get("attempts", 0) >= MAX_ATTEMPTS
    )
