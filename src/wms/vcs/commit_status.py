"""A batch's training as a status on its data commit, where the person who pushed it looks.

GitHub runs the training from main once the branch's check passed (training-data-pipeline.yaml
starts on `workflow_run`), so the run is listed under main and the data commit shows only its
check. `wms pipeline run` and `wms pipeline sweep` therefore set a status "WMS training" on the
batch's commit, and a published batch's outcome also on the pointer commit its pull request
carries (git.host = "github", with the job's GITHUB_TOKEN; the job needs statuses: write):

    pending   a run took the batch on (it may wait for the store's lock)
    success   promoted, published (its pull request is open), not-promoted, no-new-data
    failure   rejected (push a fixed batch), closed (its pull request was closed unmerged),
              or failed MAX_ATTEMPTS times (the sweeper gave up; a last run that died is
              recorded failed by the sweeper's look once it started longer ago than a run
              lasts, compute.longest_run, and its "pending" turns to this)
    error     failed: the sweeper runs it again

A status that cannot be set (no permission, GitHub down) is one line; it never fails the run.

Data push, which checks a data branch's pairs before any run and holds no secret, sets the same
status to failure ("rejected: the new pairs did not pass ...") when they fail validation
(`wms vcs comment-validation`). No run then starts for the commit, and the sweeper's look records
the batch rejected from that status (`check_refusal`), so no compute starts for it either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from wms.batches import MAX_ATTEMPTS, BatchLedger, gave_up
from wms.compute.base import Notify
from wms.config import Project
from wms.errors import WmsError

if TYPE_CHECKING:
    from wms.vcs.base import GitHost
    from wms.vcs.github import GitHubHost

CONTEXT = "WMS training"
# The summary of a batch whose pairs Data push's validation refused (the commit's comment lists why).
CHECK_REFUSAL = (
    "the new pairs did not pass validation in Data push (the commit's comment lists why); push a fixed batch"
)
STATES = {
    "running": "pending",
    "promoted": "success",
    "published": "success",
    "not-promoted": "success",
    "no-new-data": "success",
    "rejected": "failure",
    "closed": "failure",
    "failed": "error",
}


def status_of(record: dict[str, Any]) -> tuple[str, str]:
    """The commit status (state, description) that says where the batch of `record` stands."""
    status = str(record.get("status") or "")
    summary = str(record.get("summary") or "")
    if status == "running":
        return "pending", "queued or training; the run's page has its progress"
    if gave_up(record):
        return "failure", f"failed {MAX_ATTEMPTS} runs, not retried: {summary}; push the pairs again"
    text = summary if summary.startswith(status.replace("-", " ")) else f"{status}: {summary}"
    if status == "failed":
        text += f" (the sweeper runs it again, {MAX_ATTEMPTS} runs in all)"
    return STATES.get(status, "error"), text.rstrip(": ")


def check_refusal(host: GitHost, sha: str) -> str | None:
    """Why a check before any run refused the batch of commit `sha`: the description of its
    "WMS training" failure ("rejected: ..."), as a batch record's summary; None where it has none.

    Only for a commit no run took on: a run's own rejection reads the same, and is recorded.
    """
    found = host.commit_status(sha, CONTEXT)
    if found is None or found[0] != "failure" or not found[1].startswith("rejected: "):
        return None
    return found[1].removeprefix("rejected: ")


class BatchStatuses:
    """Sets the "WMS training" status of batch commits on GitHub; a failure is one line."""

    def __init__(self, host: GitHubHost, run_url: str, notify: Notify) -> None:
        self.host = host
        self.run_url = run_url
        self.notify = notify

    def show_outcome(self, ledger: BatchLedger, sha: str, also: str = "") -> None:
        """The batch's record, as its run left it, on its commit and on `also` (the pointer commit
        its pull request carries, where a reviewer looks); one line where it cannot be read."""
        try:
            record = ledger.get(sha)
        except WmsError as exc:
            self.notify(f"the status of commit {sha[:7]} is left as it was: {exc}")
            return
        if record is not None:
            for commit in dict.fromkeys(c for c in (sha, also) if c):
                self.show(commit, record)

    def show_record(self, record: dict[str, Any]) -> None:
        """`show` for a batch record as the ledger writes it (it names its commit)."""
        self.show(str(record["sha"]), record)

    def show_check_refusal(self, sha: str) -> None:
        """Data push's validation refused the pairs of `sha`: rejected, with no run."""
        self.show(sha, {"status": "rejected", "summary": CHECK_REFUSAL})

    def show(self, sha: str, record: dict[str, Any]) -> None:
        state, description = status_of(record)
        try:
            self.host.set_commit_status(sha, state, description, CONTEXT, self.run_url)
        except Exception as exc:  # the batch's outcome is recorded in the store either way
            refused = getattr(exc, "status", 0) in (403, 404)  # GitHub's answers to a token without it
            hint = "; the job's token needs statuses: write" if refused else ""
            self.notify(f"could not set the status of commit {sha[:7]} ({exc}){hint}")


def batch_statuses(project: Project, env: Mapping[str, str], notify: Notify) -> BatchStatuses | None:
    """Statuses for the batches this job runs: with git.host = "github" and the job's GITHUB_TOKEN
    (never WMS_GITHUB_TOKEN: a status needs no more than the job's own token); otherwise none."""
    token = env.get("GITHUB_TOKEN", "")
    if project.settings.git.host != "github" or not token:
        return None
    from wms.errors import ConfigError
    from wms.vcs import make_github_host

    own = {"GITHUB_TOKEN": token, "GITHUB_REPOSITORY": env.get("GITHUB_REPOSITORY", "")}
    try:
        host = make_github_host(project, own)
    except ConfigError as exc:
        notify(f"batch commits get no status: {exc}")
        return None
    server, repository, run = (
        env.get(k, "") for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    run_url = f"{server}/{repository}/actions/runs/{run}" if server and repository and run else ""
    return BatchStatuses(host, run_url, notify)
