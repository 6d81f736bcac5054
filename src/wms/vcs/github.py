"""The GitHub host: a pull request per data branch with auto-merge, commit comments, runners.

Talks to GitHub through githubkit (wms.vcs.github_client): REST for pull requests, labels,
comments, merges and runners, GraphQL for the one thing REST cannot do:
`enablePullRequestAutoMerge`. Where the repository does not allow auto-merge (Settings →
General → "Allow auto-merge" is off by default) or there is nothing left to wait for, it merges
at once when `git.merge_fallback` is on. Answers are read as plain JSON (githubkit's
TypedDicts), not validated into models: wms reads a few fields, and a field GitHub adds or
drops elsewhere must not stop a promotion.
"""

from __future__ import annotations

import contextlib
import itertools
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal

from githubkit.utils import UNSET

from wms.compute.base import RunnerJob
from wms.errors import ConfigError
from wms.times import parse_time
from wms.vcs.base import Published, PullRequestState
from wms.vcs.git import Git, GitError
from wms.vcs.github_client import GitHubClient, GitHubError

MergeMethod = Literal["squash", "merge", "rebase"]

BODY_LIMIT = 60_000  # GitHub refuses bodies over 65,536 characters
# A pull request GitHub holds longer than this is listed for a person: its checks have run by then.
BLOCKED_AFTER = timedelta(hours=1)
AUTO_MERGE = """
mutation($id: ID!, $method: PullRequestMergeMethod!) {
  enablePullRequestAutoMerge(input: {pullRequestId: $id, mergeMethod: $method}) {
    pullRequest { number autoMergeRequest { enabledAt mergeMethod } }
  }
}
"""
# GraphQL answers that mean "auto-merge cannot be enabled here", as opposed to a real failure.
CANNOT_AUTO_MERGE = ("auto merge is not allowed", "clean status", "unstable status")


@dataclass(frozen=True)
class PullRequest:
    """What wms needs of a pull request."""

    number: int
    node_id: str
    html_url: str
    head_sha: str = ""


@dataclass(frozen=True)
class Runner:
    """A self-hosted Actions runner of the repository."""

    name: str
    status: str
    busy: bool = False
    labels: list[str] = field(default_factory=list)


class GitHubHost:
    """Pull requests with auto-merge on GitHub; the data branch is pushed first."""

    name = "github"

    def __init__(
        self,
        client: GitHubClient,
        repository: str,
        *,
        base_branch: str = "main",
        labels: list[str] | None = None,
        merge_method: MergeMethod = "squash",
        merge_fallback: bool = True,
        git: Git | None = None,
        remote: str = "origin",
        workflows_token: str = "",
    ) -> None:
        if repository.count("/") != 1 or not all(repository.split("/")):
            raise ConfigError(
                f'git.repository {repository!r} is not owner/name; set it, e.g. git.repository = "acme/wms"'
            )
        self.client = client
        self.repository = repository
        self.owner, self.repo = repository.split("/")
        self.base_branch = base_branch
        self.labels = list(labels or [])
        self.merge_method: MergeMethod = merge_method
        self.merge_fallback = merge_fallback
        self.git = git
        self.remote = remote
        self.workflows_token = workflows_token

    def publish(self, branch: str, title: str, body: str) -> Published:
        """Push the branch, create or update its pull request, label it and enable auto-merge."""
        if self.git is not None:
            self._push(self.git, branch)
        body = _fit(body)
        rest, found = self.client.sdk.rest, self.find_pull_request(branch)
        if found is None:
            answer = self.client.call(
                lambda: rest.pulls.create(
                    self.owner, self.repo, title=title, head=branch, base=self.base_branch, body=body
                )
            )
        else:
            number = found.number
            answer = self.client.call(
                lambda: rest.pulls.update(self.owner, self.repo, number, title=title, body=body)
            )
        pr = _pull_request(answer)
        if self.labels:
            self.client.call(
                lambda: rest.issues.add_labels(self.owner, self.repo, pr.number, labels=list(self.labels))
            )
        try:
            self.client.graphql(AUTO_MERGE, {"id": pr.node_id, "method": self.merge_method.upper()})
        except GitHubError as exc:
            if not any(reason in str(exc).lower() for reason in CANNOT_AUTO_MERGE):
                raise
            if not self.merge_fallback:
                hint = (
                    "turn on Settings → General → Allow auto-merge"
                    if "not allowed" in str(exc).lower()
                    else "nothing is left to wait for"
                )
                return Published(
                    f"{pr.html_url} is open for review: auto-merge cannot be enabled ({exc}); {hint}, "
                    "or set git.merge_fallback = true to merge at once",
                    merged=False,
                )
            return self._merge_now(pr, title, branch, reason=str(exc))
        line = f"{pr.html_url} opened with auto-merge ({self.merge_method}): it merges when the checks pass"
        return Published(line, merged=False)

    def _push(self, git: Git, branch: str) -> None:
        """Push HEAD to `branch` with the job's GITHUB_TOKEN (its push starts no workflow run); where
        GitHub refuses it main's changes to .github/workflows/, taken in by publishing, push again
        with `workflows_token`."""
        refspec, fix = f"HEAD:refs/heads/{branch}", "the Workflows permission (read and write)"
        try:
            return git.push(self.remote, refspec, no_verify=True)
        except GitError as exc:
            if "workflow" not in str(exc):
                raise
            why = f"{exc} — main changed .github/workflows/ since {branch} was cut"
        if not self.workflows_token:
            raise GitError(f"{why}, and the job's token may not push that: set WMS_GITHUB_TOKEN, with {fix}")
        try:
            git.push(self.remote, refspec, no_verify=True, token=self.workflows_token)
        except GitError as exc:
            bypass = "and a bypass of any ruleset on .github/workflows/**"
            raise GitError(f"{exc} — give WMS_GITHUB_TOKEN {fix} {bypass}") from None

    def find_pull_request(self, branch: str) -> PullRequest | None:
        """The open pull request from `branch` into the base branch, if there is one."""
        found = self.client.call(
            lambda: self.client.sdk.rest.pulls.list(
                self.owner, self.repo, state="open", head=f"{self.owner}:{branch}", base=self.base_branch
            )
        )
        return _pull_request(found[0]) if found else None

    def pull_request_state(self, branch: str) -> PullRequestState | None:
        """Where `branch`'s newest pull request into the base branch stands; None where there is none.

        An open one `conflicts` where GitHub has found it cannot merge (`mergeable` false: the
        base branch changed the same lines since, such as another batch's promotion); GitHub
        says nothing about that to anyone, and auto-merge waits for good. One opened over
        BLOCKED_AFTER ago that GitHub still holds (`mergeable_state` "blocked": a required check
        failed, or a required review is missing) is `blocked`: auto-merge waits with it.
        """
        rest = self.client.sdk.rest
        found = self.client.call(
            lambda: rest.pulls.list(
                self.owner,
                self.repo,
                state="all",
                head=f"{self.owner}:{branch}",
                base=self.base_branch,
                sort="created",
                direction="desc",
                per_page=1,
            )
        )
        if not found:
            return None
        latest = found[0]
        url = str(latest.get("html_url") or f"pull request #{latest.get('number')}")
        if latest.get("state") == "closed":
            return PullRequestState(url, "merged" if latest.get("merged_at") else "closed")
        number = int(latest["number"])
        # only the single pull request carries `mergeable`: null while GitHub still works it out
        detail = self.client.call(lambda: rest.pulls.get(self.owner, self.repo, number))
        if detail.get("mergeable") is False:
            return PullRequestState(url, "conflicts")
        held = detail.get("mergeable_state") == "blocked"
        if held and _older_than(latest.get("created_at"), BLOCKED_AFTER):
            return PullRequestState(url, "blocked")
        return PullRequestState(url, "open")

    def _merge_now(self, pr: PullRequest, title: str, branch: str, reason: str) -> Published:
        rest = self.client.sdk.rest
        try:
            merged = self.client.call(
                lambda: rest.pulls.merge(
                    self.owner,
                    self.repo,
                    pr.number,
                    merge_method=self.merge_method,
                    commit_title=f"{title} (#{pr.number})",
                    sha=pr.head_sha or UNSET,  # refuse to merge if someone pushed to the branch meanwhile
                )
            )
        except GitHubError as exc:
            if exc.status in (405, 409):
                with contextlib.suppress(GitHubError):  # the outcome line says it as well
                    self.comment_on_pull_request(pr.number, _cannot_merge_comment(self.base_branch, str(exc)))
                return Published(
                    f"{pr.html_url} is open for review: GitHub would not merge it ({exc}); production stays "
                    f"where {self.base_branch} says (a comment on the pull request says why)",
                    merged=False,
                )
            raise
        with contextlib.suppress(GitHubError):  # the repository may delete merged branches itself
            ref = f"heads/{urllib.parse.quote(branch)}"
            self.client.send(lambda: rest.git.delete_ref(self.owner, self.repo, ref))
        sha = str(merged.get("sha") or "")[:7]
        line = f"{pr.html_url} merged into {self.base_branch} ({sha}); auto-merge was not possible: {reason}"
        return Published(line, merged=True)

    def comment_on_pull_request(self, number: int, body: str) -> str:
        """A comment on the pull request's conversation; returns its URL."""
        answer = self.client.call(
            lambda: self.client.sdk.rest.issues.create_comment(self.owner, self.repo, number, body=_fit(body))
        )
        return str(answer.get("html_url") or f"pull request #{number}")

    def comment_on_commit(self, sha: str, body: str) -> str:
        answer = self.client.call(
            lambda: self.client.sdk.rest.repos.create_commit_comment(
                self.owner, self.repo, sha, body=_fit(body)
            )
        )
        return str(answer.get("html_url") or f"commit {sha[:7]}")

    def set_commit_status(self, sha: str, state: str, description: str, context: str, url: str = "") -> None:
        """A status on the commit (pending, success, failure or error), shown beside its checks; the
        token needs statuses: write. GitHub keeps the latest per `context`."""
        fields = {"state": state, "description": description[:140], "context": context}
        if url:
            fields["target_url"] = url
        create = self.client.sdk.rest.repos.create_commit_status
        self.client.call(partial(create, self.owner, self.repo, sha, **fields))

    def commit_status(self, sha: str, context: str) -> tuple[str, str] | None:
        """The commit's latest status `context` as (state, description); None where it has none.
        The token needs statuses: read (write includes it)."""
        try:
            combined = self.client.call(
                partial(self.client.sdk.rest.repos.get_combined_status_for_ref, self.owner, self.repo, sha)
            )
        except GitHubError as exc:
            if exc.status == 404:  # a commit GitHub does not have (a branch never pushed)
                return None
            raise
        for status in combined.get("statuses") or []:  # the latest of each context
            if status.get("context") == context:
                return str(status.get("state")), str(status.get("description") or "")
        return None

    def list_runners(self) -> list[Runner]:
        """The repository's self-hosted runners (the token needs administration: read)."""
        runners: list[Runner] = []
        list_page = self.client.sdk.rest.actions.list_self_hosted_runners_for_repo
        for page in itertools.count(1):
            answer = self.client.call(partial(list_page, self.owner, self.repo, per_page=100, page=page))
            batch = answer.get("runners") or []
            runners += [
                Runner(
                    name=r["name"],
                    status=r.get("status") or "offline",
                    busy=bool(r.get("busy", False)),
                    labels=[label["name"] for label in r.get("labels") or []],
                )
                for r in batch
            ]
            if len(batch) < 100:
                break
        return runners

    def enable_workflow(self, workflow: str) -> None:
        """Enable a workflow (a file name in .github/workflows) again; the token needs actions: write."""
        enable = self.client.sdk.rest.actions.enable_workflow
        self.client.send(partial(enable, self.owner, self.repo, workflow))

    def runner_jobs(self, label: str) -> list[RunnerJob]:
        """The jobs of this repository's queued and running workflow runs that are queued for, or in
        progress on, a self-hosted runner with `label` (a stop's look; the token needs actions: read)."""
        actions, jobs, seen = self.client.sdk.rest.actions, [], set()
        for status in ("queued", "in_progress"):
            listed = partial(actions.list_workflow_runs_for_repo, self.owner, self.repo, status=status)
            for run in self.client.call(partial(listed, per_page=100)).get("workflow_runs") or []:
                if run["id"] in seen:
                    continue
                seen.add(run["id"])
                answer = self.client.call(
                    partial(
                        actions.list_jobs_for_workflow_run, self.owner, self.repo, run["id"], per_page=100
                    )
                )
                jobs += [
                    RunnerJob(
                        int(run["id"]), str(job.get("name") or ""), job["status"], str(run.get("name") or "")
                    )
                    for job in answer.get("jobs") or []
                    if job.get("status") in ("queued", "in_progress")
                    and label.lower() in {str(name).lower() for name in job.get("labels") or []}
                ]
        return jobs

    def is_online(self, name: str) -> bool:
        """Whether the self-hosted runner `name` is connected (the compute readiness probe)."""
        return any(r.name == name and r.status == "online" for r in self.list_runners())


def _older_than(stamp: Any, age: timedelta) -> bool:
    """Whether GitHub's time `stamp` ("2026-12-06T12:00:00Z") is more than `age` ago; False without one."""
    when = parse_time(stamp)
    return when is not None and datetime.now(UTC) - when > age


def _pull_request(answer: Any) -> PullRequest:
    """A pull request from GitHub's JSON (the pull request of a list, a create or an update)."""
    return PullRequest(
        number=int(answer["number"]),
        node_id=str(answer["node_id"]),
        html_url=str(answer["html_url"]),
        head_sha=str((answer.get("head") or {}).get("sha") or ""),
    )


def _cannot_merge_comment(base: str, reason: str) -> str:
    return (
        f"**wms could not merge this pull request** into `{base}`: {reason}.\n\n"
        f"Nothing moved: the `production` alias and the deployment follow `models/production_current.json` "
        f"on `{base}`, which still names the model in production. The candidate stays registered for review. "
        f"Usually `{base}` moved since the pipeline ran (another batch was promoted meanwhile): close this "
        f"pull request and push the batch again, so it is trained and judged on top of the new `{base}`.\n"
    )


def _fit(body: str) -> str:
    if len(body) <= BODY_LIMIT:
        return body
    return body[:BODY_LIMIT] + "\n\n… (cut to fit GitHub's limit; the full report is in the run's files)\n"
