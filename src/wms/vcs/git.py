"""A thin wrapper around the `git` executable: every call is one subprocess, errors become BackendError."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

from wms.errors import BackendError

ZERO_SHA = "0" * 40
# The id of the empty tree: what a first commit is compared with.
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


class GitError(BackendError):
    """A git command failed."""


class Git:
    """Runs git commands in one repository."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _git(
        self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            # A path git prints need not be UTF-8 (a name made on another system, or on purpose):
            # its bytes come back as surrogates instead of stopping the caller with a traceback.
            return subprocess.run(
                ["git", *args],
                cwd=self.root,
                input=stdin,
                capture_output=True,
                text=True,
                errors="surrogateescape",
                env=None if env is None else {**os.environ, **env},
                check=False,
            )
        except FileNotFoundError:
            raise GitError("git is not installed or not on PATH; install git and try again") from None

    def run(self, *args: str, check: bool = True) -> str:
        """Run `git ARGS` and return its stdout without the trailing newline."""
        done = self._git(*args)
        if check and done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise GitError(f"`git {' '.join(args)}` failed: {detail[-1] if detail else 'no output'}")
        return done.stdout.rstrip("\n")

    def ok(self, *args: str) -> bool:
        """Whether `git ARGS` succeeds."""
        return subprocess.run(["git", *args], cwd=self.root, capture_output=True, check=False).returncode == 0

    def toplevel(self) -> Path:
        """The working tree's root; a GitError outside a repository."""
        return Path(self.run("rev-parse", "--show-toplevel"))

    def current_branch(self) -> str | None:
        """The checked-out branch, or None on a detached HEAD."""
        name = self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return name or None

    def rev_parse(self, ref: str) -> str:
        return self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")

    def has_commit(self, sha: str) -> bool:
        return sha != ZERO_SHA and self.ok("cat-file", "-e", f"{sha}^{{commit}}")

    def hooks_dir(self) -> Path:
        """Where git looks for hooks (honours core.hooksPath and linked worktrees)."""
        path = Path(self.run("rev-parse", "--git-path", "hooks"))
        return path if path.is_absolute() else self.root / path

    def new_commits(self, tip: str, remote_sha: str, remote: str) -> list[str]:
        """Commits in `tip` the remote does not have yet, newest first."""
        if self.has_commit(remote_sha):
            return self.run("rev-list", tip, f"^{remote_sha}").split()
        # The remote branch is new, or moved past what we know: compare with every remote-tracking ref.
        return self.run("rev-list", tip, "--not", f"--remotes={remote}").split()

    def push_base(self, tip: str, remote_sha: str, remote: str) -> str:
        """What the pushed tip is compared with: the remote's commit, or where the new commits branch off."""
        if self.has_commit(remote_sha):
            return remote_sha
        boundary = self.run("rev-list", "--boundary", tip, "--not", f"--remotes={remote}").split()
        roots = [line[1:] for line in boundary if line.startswith("-")]
        return roots[0] if roots else EMPTY_TREE

    def changed_files(self, base: str, tip: str, *, diff_filter: str | None = None) -> list[str]:
        """Paths that differ between two commits (or the empty tree and a commit)."""
        args = ["diff", "--name-only", "--no-renames"]
        if diff_filter:
            args.append(f"--diff-filter={diff_filter}")
        out = self.run(*args, base, tip)
        return [line for line in out.splitlines() if line]

    def push(self, remote: str, refspec: str, *, no_verify: bool = False, token: str = "") -> None:
        """Push one refspec; a refusal says why in git's (and the remote's) own words.

        `token` (an HTTPS remote's, e.g. GitHub's) authenticates this push alone, whatever git
        would otherwise use: it reaches git through its environment, never its arguments (which
        any process may list) nor a file.
        """
        args = ["push", "--quiet"]
        if no_verify:
            args.append("--no-verify")  # the pre-push hook must not judge its own push
        done = self._git(*args, remote, refspec, env=token_env(token) if token else None)
        if done.returncode != 0:
            # git's last line is always "failed to push some refs"; the reason is in the lines before.
            reasons = [
                line.strip()
                for line in done.stderr.splitlines()
                if line.strip() and not line.startswith("hint:") and "failed to push some refs" not in line
            ]
            raise GitError(f"git push to {remote} failed: {'; '.join(reasons[-3:]) or 'no reason given'}")

    def remote_branches_at(self, sha: str, remote: str, prefix: str) -> list[str]:
        """`remote`'s branches named `prefix`... that hold `sha`, as this clone last saw them (no network)."""
        base = f"refs/remotes/{remote}/"
        # A pattern matches a whole folder ("data/") or, with *, names within one ("data-*").
        patterns = (f"{base}{prefix}", f"{base}{prefix}*")
        out = self.run("for-each-ref", f"--points-at={sha}", "--format=%(refname)", *patterns)
        return sorted({line.removeprefix(base) for line in out.splitlines() if line})

    def promisor_remotes(self) -> list[str]:
        """The remotes a partial clone fetches missing objects from, in git's order; [] in a full clone."""
        first = self.run("config", "--get", "extensions.partialclone", check=False)
        flags = self.run("config", "--type=bool", "--get-regexp", r"^remote\..*\.promisor$", check=False)
        names = [first] if first else []
        for line in flags.splitlines():
            key, _, value = line.rpartition(" ")
            name = key.removeprefix("remote.").removesuffix(".promisor")
            if value == "true" and name not in names:
                names.append(name)
        return names

    def missing_objects(self, tree: str) -> list[str]:
        """Objects under `tree` (a tree-ish: "SHA:path") that this clone does not hold, found without
        fetching them (`--missing=print`): the blobs a partial clone would fetch one by one when read."""
        listing = self.run("rev-list", "--objects", "--missing=print", tree)
        return [line[1:] for line in listing.splitlines() if line.startswith("?")]

    def fetch_objects(self, remote: str, oids: list[str]) -> str | None:
        """Fetch `oids` from the promisor `remote` in one round trip, as git's own batch prefetch does
        (promisor-remote.c); None when it worked, else git's last line saying why.

        It runs with this process's environment, so the credentials the rest of git uses (a helper
        or header set through GIT_CONFIG_* variables) reach it too.
        """
        args = ["-c", "fetch.negotiationAlgorithm=noop", "fetch", remote, "--no-tags"]
        args += ["--no-write-fetch-head", "--recurse-submodules=no", "--filter=blob:none", "--stdin"]
        done = self._git(*args, stdin="".join(f"{oid}\n" for oid in oids))
        if done.returncode == 0:
            return None
        detail = (done.stderr or done.stdout).strip().splitlines()
        return detail[-1] if detail else f"git fetch exited with {done.returncode}"

    def ls_files(self, path: str) -> list[str]:
        return [line for line in self.run("ls-files", "--", path).splitlines() if line]

    def short(self, ref: str = "HEAD") -> str:
        return self.run("rev-parse", "--short", ref)


def token_env(token: str) -> dict[str, str]:
    """git's configuration, as environment variables, that sends `token` as GitHub expects it
    (Basic auth, user x-access-token: App tokens and personal access tokens alike)."""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraheader",
        "GIT_CONFIG_VALUE_0": f"AUTHORIZATION: basic {basic}",
    }


def head_commit(root: Path, dirty_paths: tuple[str, ...] = ()) -> str:
    """The commit checked out at `root`, with "+dirty" when any of `dirty_paths` differ from it,
    a new file there that git does not ignore included (a wheel built from them ships it);
    "unknown" outside a git checkout (or without git)."""
    git = Git(root)
    try:
        head = git.run("rev-parse", "HEAD")
        dirty = bool(dirty_paths) and bool(
            git.run("status", "--porcelain", "--untracked-files=normal", "--", *dirty_paths)
        )
    except GitError:
        return "unknown"
    return head + ("+dirty" if dirty else "")
