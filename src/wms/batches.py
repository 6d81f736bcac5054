"""Every pushed batch accounted for: one record per data-branch commit, kept in the dataset store.

    <store>/batches/<commit sha>.json   branch, status, attempts, the last run and what it said

A pipeline run on a data branch writes `running` once it holds the store's pipeline lock,
and its outcome when it ends. `wms pipeline sweep` (a schedule in CI) runs every data branch
whose head commit has no finished record, so a run that was cancelled, lost its runner or
never started is caught up. Statuses:

    promoted       merged into main: main's dataset.json and production pointer name it
    published      a pull request with the promotion is open (auto-merge); the sweeper records
                   it promoted once main's production ledger holds the promotion
    closed         its pull request was closed without merging: nothing of it reached main; the
                   branch stays, and each sweep lists it for a person (reopen the pull request,
                   or push the pairs again in a new commit)
    not-promoted   the gate kept production; the branch stays for review with its report
    rejected       the data is invalid or conflicts with main, or the branch changes more than
                   data/incoming/ (refused before any run); push a fixed batch
    no-new-data    the batch holds nothing main's dataset does not have
    failed         the run broke (compute, network, a bug, a store or main that needs
                   fixing); the sweeper tries again
    running        a run is at it (or died: the sweeper finds out under the lock; a last
                   attempt that started longer ago than a run lasts is recorded failed)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from wms.config import Project
from wms.data.backend import store_errors
from wms.errors import BackendError, DataError
from wms.files import put_file
from wms.times import parse_time
from wms.vcs.git import Git, GitError

if TYPE_CHECKING:
    from wms.runs import PipelineRun

FINISHED = ("promoted", "published", "closed", "not-promoted", "rejected", "no-new-data")
STATUSES = ("running", "failed", *FINISHED)  # every status a record can say
MAX_ATTEMPTS = 3
SHA = re.compile(r"[0-9a-f]{40}")


def check_sha(sha: str) -> str:
    """A full commit id, or a DataError (it becomes part of a path)."""
    if not SHA.fullmatch(sha):
        raise DataError(f"{sha!r} is not a full commit id (40 hex characters); pass `git rev-parse BRANCH`")
    return sha


class BatchLedger:
    """The batch records of one dataset store; `on_write` sees each record once it is written
    (the sweep shows refusals and settled pull requests on the batch's commit)."""

    def __init__(
        self, fs: Any, store_root: str, on_write: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.fs = fs
        self.root = f"{store_root}/batches"
        self.on_write = on_write

    def _path(self, sha: str) -> str:
        return f"{self.root}/{check_sha(sha)}.json"

    def get(self, sha: str) -> dict[str, Any] | None:
        """The record of one commit, or None when no run ever held the lock for it."""
        try:
            with store_errors(f"read the batch record {self._path(sha)}"):
                return dict(json.loads(self.fs.cat_file(self._path(sha))))
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # a record cut short: treat the batch as never run

    def _put(self, record: dict[str, Any]) -> None:
        record["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        with store_errors(f"write the batch record {self._path(record['sha'])}"):
            self.fs.makedirs(self.root, exist_ok=True)
            # Whole or not at all: a record cut short would read as a batch never run.
            put_file(self.fs, self._path(record["sha"]), (json.dumps(record, indent=1) + "\n").encode())
        if self.on_write is not None:
            self.on_write(record)

    def with_status(self, status: str) -> list[dict[str, Any]]:
        """Every record that says `status`; reads them all (one request each on S3), so call it rarely."""
        return [record for record in self.all() if record.get("status") == status]

    def all(self) -> list[dict[str, Any]]:
        """Every record, in no order; reads them all (one request each on S3), so call it rarely."""
        with store_errors(f"read the batch records in {self.root}"):
            try:
                paths = [path for path in self.fs.ls(self.root, detail=False) if path.endswith(".json")]
            except FileNotFoundError:
                return []
            texts = self.fs.cat(paths) if paths else {}
        found = []
        for text in texts.values():
            try:
                record = json.loads(text)
            except ValueError:
                continue  # a record cut short reads as a batch never run
            if isinstance(record, dict) and SHA.fullmatch(str(record.get("sha"))):
                found.append(record)
        return found

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

    def refuse(self, branch: str, sha: str, reason: str) -> None:
        """Record the batch as rejected without a run: its branch was refused, nothing from it is used."""
        old = self.get(sha) or {}
        self._put({**old, "branch": branch, "sha": sha, "status": "rejected", "summary": reason})

    def finish(self, sha: str, status: str, summary: str, **extra: Any) -> None:
        """Record how the batch's run ended."""
        record = self.get(sha) or {"sha": sha}
        record.update(status=status, summary=summary, **extra)
        self._put(record)


def is_finished(record: dict[str, Any] | None) -> bool:
    """Whether the batch needs no more runs."""
    return record is not None and record.get("status") in FINISHED


def resume_refusal(record: dict[str, Any] | None, run_id: str) -> str | None:
    """Why run `run_id` may not go on with its batch (finished, or another run's since); None if it may."""
    if record is None:
        return None
    batch = f"batch {record.get('branch', '?')} ({str(record.get('sha', ''))[:12]})"
    status, owner = record.get("status"), record.get("run_id")
    if is_finished(record):
        by = f" by run {owner}" if owner else ""
        return (
            f"{batch} was finished{by}: {status} ({record.get('summary', '')}); there is nothing to resume "
            "(a rejected batch is pushed again, fixed)"
        )
    if owner != run_id:
        return (
            f"{batch} is no longer this run's: run {owner} took it on since ({status}); go on with that "
            "run where it ran, or let `wms pipeline sweep` run the batch"
        )
    return None


def gave_up(record: dict[str, Any] | None) -> bool:
    """Whether the sweeper stopped retrying a batch: MAX_ATTEMPTS runs took it on and none finished it.

    Counted whatever the last run left: `failed`, but also `running` (its process was killed, or
    the runner lost, every time) or a status this version does not know.
    """
    return record is not None and not is_finished(record) and int(record.get("attempts") or 0) >= MAX_ATTEMPTS


def died(record: dict[str, Any] | None, longest_run: timedelta, now: datetime | None = None) -> bool:
    """Whether the record's `running` run cannot be alive: it started longer ago than a run lasts
    (compute.longest_run), so its process was killed, ran out of memory or lost its runner."""
    if record is None or record.get("status") != "running":
        return False
    started = parse_time(record.get("started_at"))
    if started is None:
        return False  # no start time: nothing says it is over
    return (now or datetime.now(UTC)) - started > longest_run


def detect_batch(project: Project, branch: str | None, sha: str | None) -> dict[str, str] | None:
    """The data branch commit a run's pairs came from: as given, or the checked-out data branch."""
    git = Git(project.root)
    if branch is None:
        try:
            current = git.current_branch()
        except GitError:
            return None  # not a git repository: a plain local run, no batch to account for
        if current is None or not current.startswith(project.settings.git.data_branch_prefix):
            return None
        branch = current
    if sha is None:
        sha = git.rev_parse(branch) if git.has_commit(branch) else ""
    return {"branch": branch, "sha": check_sha(sha)} if sha else None


def outcome_of(run: PipelineRun) -> str:
    """How a run that ended without an error ends its batch's record."""
    if run.promoted:
        in_main = run.outputs.get("merged", run.outputs.get("on_main"))  # GitHub may merge at once
        return "promoted" if in_main else "published"
    merged, base = run.outputs.get("dataset_version"), run.outputs.get("base_version")
    if merged and merged == base:
        return "no-new-data"
    return "not-promoted"


def record_outcome(ledger: BatchLedger, run: PipelineRun, status: str, notify: Callable[[str], None]) -> None:
    """Write how the run ended into its batch's record (nothing for a run without a batch)."""
    batch = run.outputs.get("batch")
    if not batch:
        return
    try:
        ledger.finish(
            batch["sha"],
            status,
            run.summary,
            run_id=run.run_id,
            dataset_version=run.outputs.get("dataset_version"),
            model_version=run.outputs.get("model_version"),
            published=run.outputs.get("published"),
        )
    except BackendError as exc:  # the run's own outcome matters more; the sweeper looks again
        notify(f"the batch outcome is not recorded: {exc}")
