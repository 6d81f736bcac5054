"""The git host interface: where a promoted data branch goes, and where reports are posted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Published:
    """What publishing a promotion did: the line a person reads, and whether main has it now.

    `merged` is true where the promotion is in the base branch when publish returns (the local
    host's merge, GitHub merging at once), false for a pull request still open.
    """

    line: str
    merged: bool
    commit: str = ""  # the branch's head once published: the pointer commit its pull request carries

    def __str__(self) -> str:
        return self.line


@dataclass(frozen=True)
class PullRequestState:
    """A data branch's latest pull request: its address, and `open`, `conflicts` (open, but it cannot
    merge: the base branch changed the same lines since), `blocked` (open for over an hour, and
    held: a required check failed or a required review is missing), `merged` or `closed` (without
    merging)."""

    url: str
    state: str


class GitHost(Protocol):
    """Brings a data branch into the base branch and posts reports; `local` or `github`."""

    name: str

    def publish(self, branch: str, title: str, body: str) -> Published:
        """Merge `branch` (local) or open a pull request with auto-merge (github)."""
        ...

    def comment_on_commit(self, sha: str, body: str) -> str:
        """Attach a report to a commit; returns where it can be read."""
        ...

    def pull_request_state(self, branch: str) -> PullRequestState | None:
        """Where `branch`'s latest pull request stands; None where there is none (or all merge at once)."""
        ...

    def commit_status(self, sha: str, context: str) -> tuple[str, str] | None:
        """The commit's latest status `context` as (state, description); None where it has none
        (local: commits carry no statuses)."""
        ...
