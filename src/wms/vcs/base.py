"""The git host interface: where a promoted data branch goes, and where reports are posted."""

from __future__ import annotations

from typing import Protocol


class GitHost(Protocol):
    """Brings a data branch into the base branch and posts reports; `local` or `github`."""

    name: str

    def publish(self, branch: str, title: str, body: str) -> str:
        """Merge `branch` (local) or open a pull request with auto-merge (github); a one-line outcome."""
        ...

    def comment_on_commit(self, sha: str, body: str) -> str:
        """Attach a report to a commit; returns where it can be read."""
        ...
