"""The GitHub host: a pull request per data branch with auto-merge, commit comments, runners.

Talks to the REST API (pull requests, labels, comments, merge, runners) and to GraphQL for
the one thing REST cannot do: `enablePullRequestAutoMerge`. Where the repository does not
allow auto-merge (Settings → General → "Allow auto-merge" is off by default) or there is
nothing left to wait for, it merges at once when `git.merge_fallback` is on.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from wms.errors import BackendError, ConfigError
from wms.vcs.git import Git

BODY_LIMIT = 60_000  # GitHub refuses bodies over 65,536 characters
AUTO_MERGE = """
mutation($id: ID!, $method: PullRequestMergeMethod!) {
  enablePullRequestAutoMerge(input: {pullRequestId: $id, mergeMethod: $method}) {
    pullRequest { number autoMergeRequest { enabledAt mergeMethod } }
  }
}
"""
# GraphQL answers that mean "auto-merge cannot be enabled here", as opposed to a real failure.
CANNOT_AUTO_MERGE = ("auto merge is not allowed", "clean status", "unstable status")


class GitHubError(BackendError):
    """GitHub answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class GitHubClient:
    """A minimal JSON client for the GitHub API (standard library only)."""

    def __init__(self, api_url: str, token: str, timeout: float = 30.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @property
    def graphql_url(self) -> str:
        # github.com: api.github.com/graphql; GitHub Enterprise: <host>/api/v3 → <host>/api/graphql
        if self.api_url.endswith("/api/v3"):
            return self.api_url[: -len("/v3")] + "/graphql"
        return self.api_url + "/graphql"

    def request(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        """Send one request; returns the decoded JSON (None for an empty answer)."""
        url = path if path.startswith("http") else f"{self.api_url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/vnd.github+json")
        req.add_header("X-GitHub-Api-Version", "2022-11-28")
        req.add_header("User-Agent", "wms")
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise self._error(method, path, exc.code, exc.read()) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GitHubError(
                f"could not reach {self.api_url} ({reason}); check git.api_url and the network"
            ) from None
        return json.loads(raw) if raw.strip() else None

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """A GraphQL call; errors come back as a GitHubError carrying GitHub's messages."""
        answer = self.request("POST", self.graphql_url, {"query": query, "variables": variables}) or {}
        if answer.get("errors"):
            raise GitHubError("; ".join(str(e.get("message", e)) for e in answer["errors"]), 200)
        return dict(answer.get("data") or {})

    def _error(self, method: str, path: str, status: int, raw: bytes) -> GitHubError:
        try:
            message = str(json.loads(raw).get("message", ""))
        except (ValueError, AttributeError):
            message = raw.decode(errors="replace")[:200]
        where = f"{method} {path}"
        if status == 401:
            return GitHubError(
                f"GitHub refused the token ({where}: {message}); set WMS_GITHUB_TOKEN to a valid token",
                status,
            )
        if status in (403, 404):
            return GitHubError(
                f"GitHub answered {status} to {where} ({message}); check git.repository and that the "
                "token may write contents and pull requests (runners need administration: read)",
                status,
            )
        return GitHubError(f"GitHub answered {status} to {where}: {message}", status)


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
        merge_method: str = "squash",
        merge_fallback: bool = True,
        git: Git | None = None,
        remote: str = "origin",
    ) -> None:
        if repository.count("/") != 1 or not all(repository.split("/")):
            raise ConfigError(
                f'git.repository {repository!r} is not owner/name; set it, e.g. git.repository = "acme/wms"'
            )
        self.client = client
        self.repository = repository
        self.owner = repository.split("/")[0]
        self.base_branch = base_branch
        self.labels = list(labels or [])
        self.merge_method = merge_method
        self.merge_fallback = merge_fallback
        self.git = git
        self.remote = remote

    @property
    def _repo(self) -> str:
        return f"/repos/{self.repository}"

    def publish(self, branch: str, title: str, body: str) -> str:
        """Push the branch, create or update its pull request, label it and enable auto-merge."""
        if self.git is not None:
            self.git.push(self.remote, f"HEAD:refs/heads/{branch}", no_verify=True)
        body = _fit(body)
        pr = self.find_pull_request(branch)
        if pr is None:
            pr = self.client.request(
                "POST",
                f"{self._repo}/pulls",
                {"title": title, "head": branch, "base": self.base_branch, "body": body},
            )
        else:
            pr = self.client.request(
                "PATCH", f"{self._repo}/pulls/{pr['number']}", {"title": title, "body": body}
            )
        number, url = pr["number"], pr["html_url"]
        if self.labels:
            self.client.request("POST", f"{self._repo}/issues/{number}/labels", {"labels": self.labels})
        try:
            self.client.graphql(AUTO_MERGE, {"id": pr["node_id"], "method": self.merge_method.upper()})
        except GitHubError as exc:
            if not any(reason in str(exc).lower() for reason in CANNOT_AUTO_MERGE):
                raise
            if not self.merge_fallback:
                hint = (
                    "turn on Settings → General → Allow auto-merge"
                    if "not allowed" in str(exc).lower()
                    else "nothing is left to wait for"
                )
                return (
                    f"{url} is open for review: auto-merge cannot be enabled ({exc}); {hint}, "
                    "or set git.merge_fallback = true to merge at once"
                )
            return self._merge_now(pr, title, branch, reason=str(exc))
        return f"{url} opened with auto-merge ({self.merge_method}): it merges when the checks pass"

    def find_pull_request(self, branch: str) -> dict[str, Any] | None:
        """The open pull request from `branch` into the base branch, if there is one."""
        found = self.client.request(
            "GET",
            f"{self._repo}/pulls",
            params={"state": "open", "head": f"{self.owner}:{branch}", "base": self.base_branch},
        )
        return found[0] if found else None

    def _merge_now(self, pr: dict[str, Any], title: str, branch: str, reason: str) -> str:
        number, url = pr["number"], pr["html_url"]
        body: dict[str, Any] = {"merge_method": self.merge_method, "commit_title": f"{title} (#{number})"}
        head = (pr.get("head") or {}).get("sha")
        if head:
            body["sha"] = head  # refuse to merge if someone pushed to the branch meanwhile
        try:
            merged = self.client.request("PUT", f"{self._repo}/pulls/{number}/merge", body)
        except GitHubError as exc:
            if exc.status in (405, 409):
                with contextlib.suppress(GitHubError):  # the outcome line says it as well
                    self.comment_on_pull_request(number, _cannot_merge_comment(self.base_branch, str(exc)))
                return (
                    f"{url} is open for review: GitHub would not merge it ({exc}); production stays "
                    f"where {self.base_branch} says (a comment on the pull request says why)"
                )
            raise
        with contextlib.suppress(GitHubError):  # the repository may delete merged branches itself
            self.client.request("DELETE", f"{self._repo}/git/refs/heads/{urllib.parse.quote(branch)}")
        sha = str((merged or {}).get("sha", ""))[:7]
        return f"{url} merged into {self.base_branch} ({sha}); auto-merge was not possible: {reason}"

    def comment_on_pull_request(self, number: int, body: str) -> str:
        """A comment on the pull request's conversation; returns its URL."""
        answer = self.client.request("POST", f"{self._repo}/issues/{number}/comments", {"body": _fit(body)})
        return str((answer or {}).get("html_url", f"pull request #{number}"))

    def comment_on_commit(self, sha: str, body: str) -> str:
        answer = self.client.request("POST", f"{self._repo}/commits/{sha}/comments", {"body": _fit(body)})
        return str((answer or {}).get("html_url", f"commit {sha[:7]}"))

    def list_runners(self) -> list[Runner]:
        """The repository's self-hosted runners (the token needs administration: read)."""
        runners: list[Runner] = []
        page = 1
        while True:
            answer = self.client.request(
                "GET", f"{self._repo}/actions/runners", params={"per_page": "100", "page": str(page)}
            )
            batch = (answer or {}).get("runners", [])
            runners += [
                Runner(
                    name=r["name"],
                    status=r.get("status", "offline"),
                    busy=bool(r.get("busy", False)),
                    labels=[label["name"] for label in r.get("labels", [])],
                )
                for r in batch
            ]
            if len(batch) < 100:
                return runners
            page += 1

    def is_online(self, name: str) -> bool:
        """Whether the self-hosted runner `name` is connected (the compute readiness probe)."""
        return any(r.name == name and r.status == "online" for r in self.list_runners())


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
