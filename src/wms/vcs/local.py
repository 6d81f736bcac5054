"""The local git host: a promoted data branch is merged into the base branch of this repository."""

from __future__ import annotations

from pathlib import Path

from wms.errors import BackendError
from wms.vcs.base import Published, PullRequestState
from wms.vcs.git import Git


class LocalHost:
    """Merges with a merge commit that carries the gate summary, then deletes the branch."""

    name = "local"

    def __init__(self, git: Git, base_branch: str, reports_dir: Path) -> None:
        self.git = git
        self.base_branch = base_branch
        self.reports_dir = reports_dir

    def publish(self, branch: str, title: str, body: str) -> Published:
        git = self.git
        if not git.ok("rev-parse", "--verify", "--quiet", f"refs/heads/{self.base_branch}"):
            raise BackendError(
                f"there is no local branch {self.base_branch!r} to merge {branch} into; "
                f"create it (git branch {self.base_branch} <commit>) or set git.base_branch"
            )
        git.run("checkout", "--quiet", self.base_branch)
        merged = git.ok("merge", "--no-ff", "--quiet", "-m", f"{title}\n\n{body}", branch)
        if not merged:
            conflicts = git.run("diff", "--name-only", "--diff-filter=U", check=False).split()
            git.run("merge", "--abort", check=False)
            git.run("checkout", "--quiet", branch, check=False)
            raise BackendError(
                f"merging {branch} into {self.base_branch} conflicts ({', '.join(conflicts) or 'see git'}); "
                f"merge it by hand: git checkout {self.base_branch} && git merge {branch}"
            )
        git.run("branch", "--quiet", "-d", branch)
        return Published(f"merged {branch} into {self.base_branch} ({git.short()})", merged=True)

    def pull_request_state(self, branch: str) -> PullRequestState | None:
        return None  # publish merges at once or fails: nothing waits here for a merge

    def commit_status(self, sha: str, context: str) -> tuple[str, str] | None:
        return None  # no check runs before the pipeline here: it validates the batch itself

    def comment_on_commit(self, sha: str, body: str) -> str:
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        path = self.reports_dir / f"commit-{sha[:12]}.md"
        path.write_text(body if body.endswith("\n") else body + "\n")
        return str(path)
