"""Settling the records of published batches: what a sweep learns from main and the git host.

A batch recorded `published` (its pull request was open when the run ended) whose promotion main's
`models/production_history.jsonl` now holds was merged since, whatever the merge method (a
squash leaves no trace of the branch in main's history): its record becomes `promoted` and
the sweep deletes its branch. A promotion's ledger line names its batch commit, so the
batches of main's latest promotions are settled too where GitHub deleted the branch on merging;
while those latest promotions include lines written before the ledger named batches, every
`published` record is read and settled by its run id, which both name. A `published` batch
that main has not taken is asked of the git host: where its pull request was closed without
merging, it is recorded `closed`, its branch stays (the labeller's work), and every sweep lists
it among the batches left to a person until the pull request is reopened and merged (then it
is recorded `promoted`) or the branch deleted. One whose pull request is open but cannot merge
(main changed the same pointer files since: another batch's promotion merged first) is listed too,
and so is one GitHub has held for over an hour (a required check failed, or a review is missing).
A `published` batch whose branch is gone (deleted by hand once its pull request was closed) is
found by reading the `published` records: settled from main's ledger, else from the pull request
of its branch's name (merged: `promoted`, closed: `closed`, said once); one the git host knows no
such pull request of stays `published`, named in one line. A commit a labeller pushed onto the
branch of a `published` (or `closed`) batch, on top of its pointer commit, is not a batch of its
own: it is recorded `rejected` with what to do instead, and the batch under it is settled and
listed as when its pointer commit was the head (the branch's pull request is still that batch's);
while that pull request is open, held back by the commit, each sweep says how to take it off.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from wms.batches import SHA, BatchLedger
from wms.config import Project
from wms.errors import WmsError
from wms.production import HISTORY_FILE
from wms.promotion import promoted_by
from wms.vcs.base import GitHost, PullRequestState
from wms.vcs.commit_status import check_refusal
from wms.vcs.git import Git
from wms.vcs.guard import BranchCheck
from wms.vcs.mainline import MainLine
from wms.vcs.publish import MAIN_MERGE_TITLE, POINTER_COMMIT_TITLE, pointer_files

T = TypeVar("T")


class MainPromotions:
    """The pipeline runs whose promotion main's production ledger holds, read once when first asked."""

    RECENT = 20  # promotions whose batch record each sweep reads: a pull request merges within days

    def __init__(self, project: Project) -> None:
        self.project = project
        self.runs: set[str] | None = None
        self.moves: list[tuple[str, str]] = []  # who made each promotion on main, and its batch commit or ""

    def settle_recent(self, ledger: BatchLedger) -> None:
        """Record `promoted` the batches of main's latest promotions whose record still says `published`."""
        self._read()
        recent = self.moves[-self.RECENT :]
        for _, sha in recent:
            if sha:
                self.settle(ledger, sha, ledger.get(sha))
        if any(not sha and by.startswith(promoted_by("")) for by, sha in recent):
            # A pipeline promotion older than the ledger's `batch`: its run id finds the batch.
            for record in ledger.with_status("published"):
                self.settle(ledger, str(record["sha"]), record)

    def settle(
        self, ledger: BatchLedger, sha: str | None, record: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """`record`, recorded `promoted` first when it says `published` (or `closed`: its pull request
        was reopened since) and main took its promotion."""
        if sha is None or record is None or record.get("status") not in ("published", "closed"):
            return record
        if promoted_by(str(record.get("run_id"))) not in self._read():
            return record  # the pull request is still open (or was closed without merging)
        summary = f"{record.get('summary', '')}; main took its pull request since".lstrip("; ")
        ledger.finish(sha, "promoted", summary)
        return ledger.get(sha)

    def _read(self) -> set[str]:
        if self.runs is None:
            path = self.project.path(self.project.settings.tracking.pointer_dir) / HISTORY_FILE
            text = MainLine(self.project).read_text(path) or ""
            self.runs = set()
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a damaged line is `wms model history`'s to report
                if isinstance(entry, dict) and entry.get("action") == "promote":
                    self.runs.add(str(entry.get("by")))
                    batch = str(entry.get("batch"))
                    self.moves.append((str(entry.get("by")), batch if SHA.fullmatch(batch) else ""))
        return self.runs


class HostLook:
    """What a sweep asks the git host: where the pull request of a `published` batch stands (closed
    without merging, or open but unable to merge), and whether Data push refused a batch's pairs."""

    def __init__(self, git_host: Callable[[], GitHost] | None, notes: list[str] | None) -> None:
        self.git_host = git_host
        self.host: GitHost | None = None
        self.notes = notes

    def check(
        self, ledger: BatchLedger, branch: str, sha: str | None, record: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """`record`, recorded `closed` first when it says `published` and its pull request was closed
        unmerged; a `closed` batch, or one whose pull request cannot merge, is listed in `notes`
        with what a person can do."""
        pr = self._ask(branch) if sha and (record or {}).get("status") == "published" else None
        if sha and record is not None and pr is not None and pr.state == "closed":
            summary = f"{record.get('summary', '')}; its pull request {pr.url} was closed without merging"
            ledger.finish(sha, "closed", summary.lstrip("; "), closed=pr.url)
            record = ledger.get(sha)
        if self.notes is None or record is None:
            return record
        if record.get("status") == "closed":
            self.notes.append(
                f"{branch}: closed, not merged — its pull request {record.get('closed', '')} was closed, so "
                "main has nothing of this batch; reopen the pull request to promote it (the sweep records "
                "it promoted once main takes it), or push its pairs again in a new commit to train them "
                "on main as it is now, then delete this branch"
            )
        elif pr is not None and pr.state == "blocked":
            self.notes.append(
                f"{branch}: published, but its pull request {pr.url} is held — GitHub will not merge it "
                "(a required check failed, or a required review is missing), and auto-merge waits with "
                "it; look at its checks and reviews (a failed check can be re-run from the pull request)"
            )
        elif pr is not None and pr.state == "conflicts":
            self.notes.append(
                f"{branch}: published, but its pull request {pr.url} cannot merge — main changed the same "
                "files since (another promotion reached main first), and auto-merge waits for good; close "
                "it (the batch is then recorded closed) and push its pairs again in a new commit to train "
                "them on main as it is now"
            )
        return record

    def settle_gone(self, ledger: BatchLedger, branches: set[str], on_main: MainPromotions) -> None:
        """Settle the `published` batches whose branch is gone (deleted by hand after its pull request
        was closed, or by GitHub on merging): no branch leads the sweep to them, so their records are read.

        Main's ledger first (`promoted`), then the git host: a merged pull request makes the batch
        `promoted`, a closed one `closed` (said once: with no branch left, nothing is listed later);
        one the host knows nothing of stays `published`, in one line.
        """
        gone = [r for r in ledger.with_status("published") if str(r.get("branch") or "") not in branches]
        unknown = []
        for record in sorted(gone, key=lambda r: str(r.get("branch") or "")):
            branch, sha = str(record.get("branch") or ""), str(record["sha"])
            settled = on_main.settle(ledger, sha, record)
            if not branch or (settled or {}).get("status") != "published":
                continue
            pr = self._ask(branch)
            if pr is not None and pr.state in ("merged", "closed"):
                how = "merged" if pr.state == "merged" else "closed without merging"
                summary = f"{record.get('summary', '')}; its pull request {pr.url} was {how}".lstrip("; ")
                if pr.state == "merged":
                    ledger.finish(sha, "promoted", summary)
                    continue
                ledger.finish(sha, "closed", summary, closed=pr.url)
                self._note(
                    f"{branch}: closed, not merged, and the branch is gone — its pull request {pr.url} was "
                    f"closed, so main has nothing of this batch; to train its pairs, push them again in a "
                    f"new commit (commit {sha[:12]} holds them, where a clone still has it)"
                )
            elif self.git_host is not None:  # asked, and no answer that settles it
                where = f"its pull request {pr.url} is open" if pr else "no pull request"
                unknown.append(f"{branch} ({sha[:12]}: {where})")
        if unknown:
            self._note(
                f"{len(unknown)} batch(es) recorded published have no data branch any more, and the git "
                f"host knows no merged or closed pull request of theirs: {', '.join(unknown[:10])}"
                f"{f' and {len(unknown) - 10} more' if len(unknown) > 10 else ''}; they stay "
                "published (recorded promoted once main's production ledger holds their promotion)"
            )

    def check_refusal(self, branch: str, sha: str) -> str | None:
        """Why Data push's validation refused the pairs of `sha` (its commit status says so), else None."""
        return self._call(branch, lambda host: check_refusal(host, sha))

    def _note(self, line: str) -> None:
        if self.notes is not None:
            self.notes.append(line)

    def _ask(self, branch: str) -> PullRequestState | None:
        return self._call(branch, lambda host: host.pull_request_state(branch))

    def _call(self, branch: str, question: Callable[[GitHost], T]) -> T | None:
        """The host's answer to `question` about `branch`; None where it cannot be asked, said in
        one line once per sweep."""
        if self.git_host is None:
            return None
        try:
            if self.host is None:
                self.host = self.git_host()
            return question(self.host)
        except WmsError as exc:  # no token, GitHub down: published batches stay so, asked next time
            if self.notes is not None:
                self.notes.append(
                    f"could not ask the git host where the pull requests of published batches stand, or "
                    f"which pairs Data push refused (the first, {branch}): {exc}; they stay published, a "
                    "refused batch runs and is rejected by its run, and the next sweep asks again"
                )
            self.git_host = None  # once per sweep
            return None


def batch_commit(git: Git, head: str) -> str | None:
    """The data branch's own commit under the pipeline's pointer commits and merges of main."""
    for line in git.run("log", "--first-parent", "-n", "20", "--format=%H %s", head).splitlines():
        commit, _, title = line.partition(" ")
        if not title.startswith((POINTER_COMMIT_TITLE, MAIN_MERGE_TITLE)):
            return commit
    return None


def published_under(
    git: Git, ledger: BatchLedger, head: str, base: str
) -> tuple[str, str, dict[str, Any]] | None:
    """The pointer commit the branch holds under `head` (a labeller's commit pushed onto the branch of a
    published batch), its batch and that batch's record, where that says `published` or `closed`."""
    own = git.run("log", "-n", "50", "--format=%H %s", head, f"^{base}").splitlines()[1:]  # not main's
    pointer = next(
        (c for c, _, t in (ln.partition(" ") for ln in own) if t.startswith(POINTER_COMMIT_TITLE)), ""
    )
    batch = batch_commit(git, pointer) if pointer else None
    record = ledger.get(batch) if batch else None
    found = batch and record and record.get("status") in ("published", "closed")
    return (pointer, batch, record) if found and batch and record else None


def held_back(branch: str, head: str, pointer: str, remote: str) -> str:
    """What a person does for a published batch whose branch a rejected commit holds on top."""
    return (
        f"{branch}: published, but held back — commit {head[:12]}, pushed onto its pointer commit, was "
        "rejected (not run), and its pull request's check (\"Data pull request changes only data and "
        'pointers") refuses it too, so auto-merge waits; once its pairs are pushed from main, take it off '
        f"the branch: git push --force-with-lease={branch}:{head} {remote} {pointer}:refs/heads/{branch}"
    )


def onto_published(check: BranchCheck, batch: dict[str, Any], project: Project) -> str:
    """Why a commit pushed onto a published batch's pointer commit is not run, and what to do instead."""
    pointers = {p.as_posix() for p in pointer_files(project)}
    more = [f"{o.path} ({o.why})" for o in check.offences if o.path not in pointers]
    return (
        f"refused commit {check.sha[:12]}: it was pushed onto the pipeline's pointer commit of batch "
        f"{str(batch['sha'])[:12]} ({batch.get('status')}: its pull request carries that batch to main), and "
        "a data branch carries one batch"
        + (f"; it also changes {', '.join(more)}" if more else "")
        + " — push its pairs from main instead (the pre-push hook puts them on a new data branch), and take "
        "this commit off the branch, or its pull request carries them to main as plain files, outside "
        "the dataset"
    )
