"""Main as it is now: the files a run must start from, whichever branch is checked out.

A data branch is cut from main at one moment; by the time its pipeline runs, main may have
moved (another batch promoted). So the base dataset version and the production pointer are
read at run time from main, never from the copy frozen on the branch:

- with the GitHub host and its remote: `<remote>/<base>`, fetched when read. Main lives there,
  and a checkout of it goes stale: a workflow checks main out, may wait hours for the store's
  lock and trains for hours more, while other batches' pull requests merge;
- with the local host (merges happen here): the working tree when main itself is checked out
  (the demo runs on main), else the local `<base>`;
- outside git: the working tree.

Publishing checks once more that main has not moved since (`wms.vcs.publish`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wms.config import Project
from wms.errors import DataError
from wms.vcs.git import Git, GitError


def main_ref(git: Git, project: Project) -> str | None:
    """The ref that is main: `<remote>/<base>` fetched now with the GitHub host, else the local
    `<base>` (or its remote-tracking ref); None when the repository has neither."""
    cfg = project.settings.git
    remote_ref = f"{cfg.remote}/{cfg.base_branch}"
    if cfg.host == "github" and git.ok("remote", "get-url", cfg.remote):
        git.run("fetch", "--quiet", cfg.remote, cfg.base_branch)
        return remote_ref
    if git.has_commit(f"refs/heads/{cfg.base_branch}"):
        return cfg.base_branch
    if git.has_commit(f"refs/remotes/{remote_ref}"):
        return remote_ref
    return None


class MainLine:
    """Reads project files as main has them."""

    def __init__(self, project: Project) -> None:
        self.project = project
        cfg = project.settings.git
        self.git = Git(project.root)
        self.top: Path | None = None
        self.ref: str | None = None  # None: the working tree is main
        try:
            self.top = self.git.toplevel()
        except GitError:
            return
        remote_main = cfg.host == "github" and self.git.ok("remote", "get-url", cfg.remote)
        if remote_main or self.git.current_branch() != cfg.base_branch:
            self.ref = main_ref(self.git, project)

    @property
    def where(self) -> str:
        """Where main was read, for run records and messages."""
        if self.ref is None:
            return "the working tree"
        return f"{self.ref} at {self.git.short(self.ref)}"

    def relative(self, path: Path) -> str:
        """`path` (in this project) relative to the repository's top, as git names it."""
        assert self.top is not None
        return path.resolve().relative_to(self.top.resolve()).as_posix()

    def read_text(self, path: Path) -> str | None:
        """The file's text on main, or None when main does not have it."""
        if self.ref is None:
            return path.read_text() if path.is_file() else None
        spec = f"{self.ref}:{self.relative(path)}"
        if not self.git.ok("cat-file", "-e", spec):
            return None
        return self.git.run("show", spec) + "\n"

    def dataset_pointer(self) -> dict[str, Any] | None:
        """`data/dataset.json` on main: the latest promoted dataset version, or None before the first."""
        from wms.data.pointer import parse_pointer

        path = self.project.path(self.project.settings.data.pointer)
        text = self.read_text(path)
        if text is None:
            return None
        return parse_pointer(text, f"{path} on main ({self.where})", "fix it on main")

    def dataset_version_at_fork(self, sha: str) -> str | None:
        """The dataset version main's `data/dataset.json` named where commit `sha` (a data
        branch's) left main: their merge-base. None when that cannot be known: outside git, a
        commit this repository lacks, no pointer there yet, or one that cannot be read."""
        from wms.data.pointer import parse_pointer

        if self.top is None:
            return None
        fork = self.git.run("merge-base", self.ref or "HEAD", sha, check=False)
        path = self.project.path(self.project.settings.data.pointer)
        spec = f"{fork}:{self.relative(path)}"
        if not fork or not self.git.ok("cat-file", "-e", spec):
            return None
        try:
            return str(parse_pointer(self.git.run("show", spec), spec, "")["version"])
        except DataError:
            return None  # the version the batch came from is unknown; it is held to the other rule

    def restore_requests(self, sha: str) -> frozenset[str]:
        """The pair ids commit `sha` (a data branch's head) names in its `Restore-masks` trailers:
        their older masks are put back on purpose (wms.data.corrections). None outside git."""
        from wms.data.corrections import RESTORE_TRAILER, restore_ids

        if self.top is None:
            return frozenset()
        fmt = f"--format=%(trailers:key={RESTORE_TRAILER},valueonly)"  # one line per trailer
        return restore_ids(self.git.run("log", "-1", fmt, sha, check=False).splitlines())

    def production_version(self) -> str | None:
        """The version main's models/production_current.json names; None before the first promotion.

        RegistryError when the file is there but names no version (an unresolved merge, an edit).
        """
        pointer = self.production_pointer()
        return str(pointer["to_version"]) if pointer else None

    def production_pointer(self) -> dict[str, Any] | None:
        """Main's models/production_current.json (version, model sha256, ...); None before the first."""
        from wms.production import CURRENT_FILE, parse_current

        path = self.project.path(self.project.settings.tracking.pointer_dir) / CURRENT_FILE
        text = self.read_text(path)
        return None if text is None else parse_current(text, path, " on main")
