"""Git and the git host: the pre-push hook, merging promoted data branches, GitHub pull requests.

`make_git_host(project)` picks the host named by `git.host`: `local` merges in this
repository, `github` opens a pull request with auto-merge through the GitHub API.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from wms.config import Project
from wms.errors import ConfigError
from wms.vcs.base import GitHost
from wms.vcs.git import Git, GitError
from wms.vcs.local import LocalHost

if TYPE_CHECKING:
    from wms.vcs.github import GitHubHost, Runner
    from wms.vcs.github_client import GitHubClient, GitHubError

HOSTS = ("local", "github")
TOKEN_VARIABLES = ("WMS_GITHUB_TOKEN", "GITHUB_TOKEN")
GITHUB_NAMES = ("GitHubClient", "GitHubError", "GitHubHost", "Runner")


def __getattr__(name: str) -> Any:
    # The GitHub SDK (githubkit, httpx) takes a good part of a second to import: only commands
    # that talk to GitHub load it, not the pre-push hook, training or the gate.
    if name in GITHUB_NAMES:
        from wms.vcs import github

        return getattr(github, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_git_host(
    project: Project, env: Mapping[str, str] | None = None, push_from: Git | None = None
) -> GitHost:
    """The host named by `git.host`; `env` (default: the process environment) supplies GitHub's token.

    `push_from` is the working tree whose HEAD the GitHub host pushes (default: the project's).
    """
    cfg = project.settings.git
    git = Git(project.root)
    if cfg.host == "local":
        return LocalHost(git, cfg.base_branch, project.state_dir / "reports")
    if cfg.host == "github":
        return make_github_host(project, env, git=push_from or git)
    raise ConfigError(f"unknown git.host {cfg.host!r}; use one of: {', '.join(HOSTS)}")


def make_github_host(
    project: Project, env: Mapping[str, str] | None = None, git: Git | None = None
) -> GitHubHost:
    """A GitHub host for this project's repository, whatever `git.host` says (runners, comments)."""
    env = os.environ if env is None else env
    cfg = project.settings.git
    name, token = next(((name, env[name]) for name in TOKEN_VARIABLES if env.get(name)), ("", ""))
    if not token:
        raise ConfigError(
            "no GitHub token: set WMS_GITHUB_TOKEN (a GitHub App token or a PAT, so the merge triggers "
            "later workflows) or GITHUB_TOKEN"
        )
    repository = cfg.repository or env.get("GITHUB_REPOSITORY", "")
    if not repository:
        raise ConfigError('no GitHub repository: set git.repository = "owner/name" or GITHUB_REPOSITORY')
    from wms.vcs.github import GitHubClient, GitHubHost

    return GitHubHost(
        GitHubClient(
            cfg.api_url,
            token,
            token_name=name,
            # GITHUB_TOKEN is the workflow's own, made for each job
            on_expiring=_warn_of_expiry(name, env) if name == "WMS_GITHUB_TOKEN" else None,
        ),
        repository,
        base_branch=cfg.base_branch,
        labels=cfg.labels,
        merge_method=cfg.merge_method,
        merge_fallback=cfg.merge_fallback,
        git=git,
        remote=cfg.remote,
        workflows_token=env.get("WMS_GITHUB_TOKEN", ""),
    )


def _warn_of_expiry(name: str, env: Mapping[str, str]) -> Callable[[datetime], None]:
    """Says, as a GitHub Actions warning and on the job's summary there, that the token expires soon."""

    def warn(expires: datetime) -> None:
        from wms.report import write_step_summary

        days = (expires - datetime.now(UTC)).days
        when = f"{expires.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        line = (
            f"the GitHub token {name} expires on {when} (in {days} days): "
            f"before then, make a new one with the same permissions and put it in the secret {name} "
            "(environment wms-production; docs/github.md)"
        )
        if env.get("GITHUB_ACTIONS") == "true":
            print(f"::warning title=GitHub token expires soon::{line}", file=sys.stderr)
            write_step_summary(f"**Warning:** {line}")
        else:
            print(line, file=sys.stderr)

    return warn


__all__ = [
    "HOSTS",
    "Git",
    "GitError",
    "GitHost",
    "GitHubClient",
    "GitHubError",
    "GitHubHost",
    "LocalHost",
    "Runner",
    "make_git_host",
    "make_github_host",
    "runner_probe_for",
    "runner_queue_for",
]


def runner_probe_for(project: Project) -> GitHubHost | None:
    """What `compute.ready_probe = "runner"` asks: GitHub, which sees the self-hosted runners."""
    if project.settings.compute.ready_probe != "runner":
        return None
    return make_github_host(project)


def runner_queue_for(project: Project) -> GitHubHost | None:
    """What a stop asks with `compute.runner_label` set: which jobs GitHub has queued for that runner."""
    if not project.settings.compute.runner_label:
        return None
    return make_github_host(project)
