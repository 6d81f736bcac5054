"""Data branches whose batch has no finished run: what `wms pipeline sweep` catches up.

A batch can be left behind by a cancelled workflow run, a runner that died, or a run that
never started. The sweeper lists the data branches (on the remote and here), skips the
heads whose record in the store (`wms.batches`) is finished, and hands the rest to the
pipeline, oldest branch first. A head that is the pipeline's own pointer commit stands for
the batch commit under it: skipped when that batch's record is finished (its pull request
is open), run again when its publish failed after the push (the new publish builds on it). A head
the branch guard refuses (it changes more than data/incoming/), or whose pairs Data push's
validation refused (its commit's status "WMS training" says so, `wms.vcs.commit_status`), is
recorded `rejected` here, so no compute starts for it and no later sweep tries it again. A
branch whose batch is recorded `promoted` is in main: nothing reads it any more, and the sweep
deletes it. The records of `published` batches are settled from main's production ledger and
the git host's pull requests (`promoted`, `closed`, or listed for a person) by
`wms.sweep_settle`. A batch whose last allowed run died (`wms.batches.died`) is recorded
`failed`, so its commit no longer says "pending".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from wms.batches import MAX_ATTEMPTS, BatchLedger, died, gave_up, is_finished
from wms.config import Project
from wms.errors import UsageError
from wms.sweep_settle import (
    HostLook,
    MainPromotions,
    batch_commit,
    held_back,
    onto_published,
    published_under,
)
from wms.vcs.base import GitHost
from wms.vcs.git import Git, GitError
from wms.vcs.guard import check_branch, resolve_base
from wms.vcs.publish import POINTER_COMMIT_TITLE


@dataclass(frozen=True)
class Pending:
    """A data branch head that needs a run."""

    branch: str
    sha: str
    why: str


def data_branches(project: Project) -> dict[str, str]:
    """Data branch name → head commit, from the remote (fetched) and this repository."""
    cfg = project.settings.git
    git = Git(project.root)
    prefix = cfg.data_branch_prefix
    try:
        git.toplevel()
    except GitError:
        raise UsageError(
            f"{project.root} is not a git repository; the sweeper finds data branches with git — run it in "
            "the project's checkout"
        ) from None
    found: dict[str, str] = {}
    if git.ok("remote", "get-url", cfg.remote):
        refspec = f"+refs/heads/{prefix}*:refs/remotes/{cfg.remote}/{prefix}*"
        git.run("fetch", "--quiet", "--prune", cfg.remote, refspec)
        fmt = "--format=%(objectname) %(refname:strip=3)"
        found.update(_parse(git.run("for-each-ref", fmt, f"refs/remotes/{cfg.remote}"), prefix))
    fmt = "--format=%(objectname) %(refname:strip=2)"
    local = _parse(git.run("for-each-ref", fmt, "refs/heads"), prefix)
    if cfg.host == "local":
        found.update(local)  # the local host merges here: a local branch is the newer word
    else:
        found = {**local, **found}
    return dict(sorted(found.items()))


def _parse(listing: str, prefix: str) -> dict[str, str]:
    pairs = (line.split(" ", 1) for line in listing.splitlines() if line.strip())
    return {name: sha for sha, name in pairs if name.startswith(prefix)}


def pending(
    project: Project,
    ledger: BatchLedger,
    notes: list[str] | None = None,
    merged: list[str] | None = None,
    git_host: Callable[[], GitHost] | None = None,
) -> list[Pending]:
    """The data branch heads that have no finished run; `notes` collects why others are left alone,
    `merged` the branches whose batch main has taken in (`promoted`), which nothing needs any more.

    A head the branch guard refuses, or one never run whose pairs Data push refused, is recorded
    `rejected` in `ledger` with the refusal, a `published` batch whose promotion main holds is
    recorded `promoted`, and one whose pull request `git_host` (made when first needed) says was
    closed without merging is recorded `closed`.
    """
    git = Git(project.root)
    cfg = project.settings.git
    todo = []
    branches = data_branches(project)
    base = resolve_base(git, cfg.remote, cfg.base_branch) if branches else ""
    on_main = MainPromotions(project)
    on_main.settle_recent(ledger)  # also those whose branch is gone (GitHub deletes it on merging)
    look = HostLook(git_host, notes)
    for branch, sha in branches.items():
        try:
            title = git.run("log", "-1", "--format=%s", sha)
        except GitError:
            continue
        after = ""
        if title.startswith(POINTER_COMMIT_TITLE):
            batch = batch_commit(git, sha)
            record = ledger.get(batch) if batch else None
            if batch is None or record is None or is_finished(record):
                record = on_main.settle(ledger, batch, record)
                _note_merged(merged, branch, look.check(ledger, branch, batch, record))
                continue  # the pipeline's own commit: the batch is published (or was, before records)
            sha, after = batch, " after pushing its pointer commit"  # its pull request was not opened
        record = ledger.get(sha)
        under = None if after else published_under(git, ledger, sha, base)
        if under is not None:  # the branch's pull request is that batch's: settled and listed as its own
            said = len(notes or [])
            below = look.check(ledger, branch, under[1], on_main.settle(ledger, *under[1:]))
            held = is_finished(record) and (below or {}).get("status") == "published"
            if held and notes is not None and len(notes) == said:  # not listed as conflicting already
                notes.append(held_back(branch, sha, under[0], cfg.remote))
        if is_finished(record):
            if under is None:  # else the branch holds a newer commit than the batch main took: kept
                _note_merged(
                    merged, branch, look.check(ledger, branch, sha, on_main.settle(ledger, sha, record))
                )
            continue
        check = check_branch(git, sha, base, project.settings.data.incoming, cfg.remote)
        refusal = None
        if not check.ok:
            refusal = check.refusal() if under is None else onto_published(check, under[2], project)
        elif record is None:  # never run: Data push's validation may have refused its pairs
            refusal = look.check_refusal(branch, sha)
        if refusal is not None:
            ledger.refuse(branch, sha, refusal)
            if notes is not None:
                notes.append(f"{branch}: rejected, not run — {refusal}")
            continue
        if gave_up(record):
            if died(record, project.settings.compute.longest_run):  # its "pending" status stays else
                ledger.finish(sha, "failed", _died(record or {}, project.settings.compute.longest_run))
                record = ledger.get(sha)
            if notes is not None:
                notes.append(f"{branch}: {_given_up(record or {})}")
            continue
        why = (
            "never ran"
            if record is None
            else f"run {record.get('run_id')} ended {record.get('status')}{after}"
        )
        todo.append(Pending(branch, sha, why))
    look.settle_gone(ledger, set(branches), on_main)
    return todo


def delete_branches(project: Project, branches: list[str]) -> list[str]:
    """Delete `branches` here and on git.remote; one line for each branch that could not go."""
    git = Git(project.root)
    remote = project.settings.git.remote
    current = git.current_branch()
    problems = []
    for branch in branches:
        try:
            if git.ok("rev-parse", "--verify", "--quiet", f"refs/remotes/{remote}/{branch}"):
                git.push(remote, f":{branch}", no_verify=True)  # an empty source deletes it there
            if branch != current and git.ok("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"):
                git.run("branch", "--quiet", "-D", branch)
        except GitError as exc:  # no right to delete, a protected branch: it only stays listed
            problems.append(f"{branch}: merged into main, but not deleted ({exc})")
    return problems


def _note_merged(merged: list[str] | None, branch: str, record: dict[str, Any] | None) -> None:
    """Add `branch` to `merged` when its batch is recorded promoted: main has it."""
    if merged is not None and (record or {}).get("status") == "promoted":
        merged.append(branch)


def _died(record: dict[str, Any], longest_run: timedelta) -> str:
    hours = longest_run.total_seconds() / 3600
    return (
        f"the last run, {record.get('run_id')}, never ended: it started {record.get('started_at')}, over "
        f"{hours:g} h ago, longer than a run lasts, so its process died (killed, out of memory, a lost "
        "runner)"
    )


def _given_up(record: dict[str, Any]) -> str:
    """Why the sweeper leaves a batch alone, and how a person runs it again."""
    status, summary = record.get("status"), record.get("summary") or ""
    last = summary if status == "failed" else f"the last run, {record.get('run_id')}, left it {status!r}"
    if status == "running":
        last += " (still at it, or its process died: killed, out of memory, a lost runner)"
    return (
        f"{record.get('attempts')} runs did not finish it (at most {MAX_ATTEMPTS}), not retried — {last}; "
        "once the cause is fixed, re-run its workflow run (wms pipeline run --branch BRANCH --sha SHA)"
    )
