"""What a data branch may change, and taking its new pairs without checking it out.

    wms vcs guard-branch --sha "$BATCH_SHA"                      # exit 1 when it touches more
    wms vcs take-incoming --sha "$BATCH_SHA" --out .wms/incoming

A push to a `data/**` branch leads to jobs that hold secrets, so the branch is untrusted: the
jobs run `main`'s code and take nothing from the branch but the files under `data.incoming`.
`check_branch` compares the commit with its merge-base with the base branch and refuses any
change outside that folder, a symlink or submodule anywhere, and `.gitattributes` or
`.gitmodules` files. Renames are seen as a delete plus an add, so moving a file out of (or
into) the folder names the path outside it. `take_incoming` runs the same check, then reads
the blobs straight from git's object store (`ls-tree`, then one `cat-file --batch`, after one
fetch of those a blob-less clone lacks), so no hook, filter or checkout of the branch ever runs,
and refuses any name that would land outside the folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from wms.config import Project
from wms.errors import WmsError
from wms.vcs.blobs import write_blobs
from wms.vcs.git import EMPTY_TREE, Git
from wms.vcs.hook import IGNORED_NAMES

SYMLINK, SUBMODULE, DELETED = "120000", "160000", "000000"
REGULAR = ("100644", "100755")
GIT_CONTROL_FILES = (".gitattributes", ".gitmodules")
SHOWN = 10  # offending paths named in the one-line refusal
# What Linux file systems (ext4, xfs) hold: bytes in one name, and in a whole path. git holds more.
NAME_MAX, PATH_MAX = 255, 4095
RULE = "data branches may only add files under {incoming}; push code through a pull request"


class BranchRefused(WmsError):
    """A data branch changes something other than new data; nothing from it is used."""


@dataclass(frozen=True)
class Offence:
    """A path the branch may not change, and why."""

    path: str
    why: str  # "outside data/incoming/", "symlink", "submodule", "git control file", "name is not UTF-8 text"


@dataclass(frozen=True)
class BranchCheck:
    """The outcome of checking one commit against its base."""

    sha: str
    base: str
    merge_base: str
    incoming: str  # the allowed folder, with a trailing slash
    changed: tuple[str, ...]
    offences: tuple[Offence, ...]
    also: tuple[str, ...] = ()  # files allowed besides the folder (a pull request's pointer files)
    pairs: tuple[str, ...] = ()  # the files under the folder it adds or changes (placeholders aside)

    @property
    def rule(self) -> str:
        if not self.also:
            return RULE.format(incoming=self.incoming)
        return (
            f"a data branch's pull request may only change {', '.join(self.also)} and remove what was in "
            f"{self.incoming}; a commit pushed onto it after the pipeline's own is refused: push code "
            "through a pull request of its own, and new pairs from main (the pre-push hook puts them on a "
            "new data branch)"
        )

    @property
    def ok(self) -> bool:
        return not self.offences

    def refusal(self) -> str:
        """The one line a person reads when the branch is refused."""
        named = ", ".join(f"{o.path} ({o.why})" for o in self.offences[:SHOWN])
        more = len(self.offences) - SHOWN
        named += f" and {more} more" if more > 0 else ""
        return f"refused commit {self.sha[:12]}: it changes {named}; " + self.rule

    def markdown(self) -> str:
        """A step-summary section for either outcome."""
        head = f"### Data branch guard: commit `{self.sha[:12]}` against `{self.base}`\n\n"
        if self.ok:
            where = f"`{self.incoming}`" + "".join(f", `{p}`" for p in self.also)
            return head + f"Allowed: {len(self.changed)} changed path(s), all under {where}.\n"
        rows = "\n".join(f"| `{o.path}` | {o.why} |" for o in self.offences)
        return head + f"**Refused.** {self.rule}.\n\n| path | why |\n|---|---|\n{rows}\n"


def incoming_prefix(incoming: Path | str) -> str:
    """`data.incoming` as a repository path with a trailing slash ("data/incoming/")."""
    text = PurePosixPath(str(incoming).replace("\\", "/")).as_posix().strip("/")
    if not text or text == "." or ".." in PurePosixPath(text).parts:
        raise BranchRefused(f"data.incoming = {incoming!r} is not a folder inside the repository")
    return text + "/"


def resolve_base(git: Git, remote: str, base_branch: str, base: str | None = None) -> str:
    """The ref to compare with: `base`, else `remote/base_branch` fetched now, else the local branch."""
    if base:
        return base
    if remote in git.run("remote").split():
        # A stale remote-tracking ref would count main's newer commits as the branch's changes.
        refspec = f"+refs/heads/{base_branch}:refs/remotes/{remote}/{base_branch}"
        git.run("fetch", "--quiet", "--no-tags", remote, refspec)
        return f"{remote}/{base_branch}"
    return base_branch


def _ensure_commit(git: Git, sha: str, remote: str) -> None:
    if git.has_commit(sha):
        return
    if remote in git.run("remote").split():
        git.run("fetch", "--quiet", "--no-tags", remote, sha, check=False)
    if not git.has_commit(sha):
        raise BranchRefused(f"commit {sha} is not in this repository or on {remote}; pass a pushed commit")


def check_branch(
    git: Git, sha: str, base: str, incoming: Path | str, remote: str = "origin", also: tuple[str, ...] = ()
) -> BranchCheck:
    """Every path `sha` changes since its merge-base with `base`, and those a data branch may not change.

    `also`: files allowed besides `incoming` (the pointer files of a promotion's pull request).
    """
    prefix = incoming_prefix(incoming)
    _ensure_commit(git, sha, remote)
    sha = git.rev_parse(sha)
    if not git.ok("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"):
        raise BranchRefused(f"base {base!r} is not a commit here; fetch it or pass --base REF")
    merge_base = git.run("merge-base", base, sha, check=False) or EMPTY_TREE
    raw = git.run("diff", "--raw", "-z", "--no-abbrev", "--no-renames", merge_base, sha)
    fields = raw.split("\0")
    changed: list[str] = []
    offences: list[Offence] = []
    pairs: list[str] = []
    # Each entry is ":old_mode new_mode old_sha new_sha status" then the path, NUL-separated.
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        if not meta.startswith(":"):
            continue
        old_mode, new_mode = meta[1:].split()[:2]
        changed.append(path)
        offences.extend(_judge(path, (old_mode, new_mode), prefix, also))
        if path.startswith(prefix) and new_mode != DELETED and PurePosixPath(path).name not in IGNORED_NAMES:
            pairs.append(shown(path))
    return BranchCheck(sha, base, merge_base, prefix, tuple(changed), tuple(offences), also, tuple(pairs))


def pairs_refusal(check: BranchCheck) -> str:
    """Why a commit bound for main (not from a data branch) that adds pairs is refused, and the way back."""
    named = ", ".join(check.pairs[:3]) + (f" and {len(check.pairs) - 3} more" if len(check.pairs) > 3 else "")
    folder = check.incoming.rstrip("/")
    return (
        f"commit {check.sha[:12]} adds {len(check.pairs)} file(s) under {check.incoming} ({named}) outside a "
        "data branch: in main they stay plain files, never trained — take them off (git rm -r --cached "
        f"{folder}/images {folder}/masks, commit, push), then, on main with the hook installed (wms hooks "
        "install), commit them again and git push origin main: the hook sends them to a new data branch"
    )


def _judge(path: str, modes: tuple[str, str], prefix: str, also: tuple[str, ...]) -> list[Offence]:
    reasons = []
    if not path.startswith(prefix) and path not in also:
        reasons.append(f"outside {prefix}" + (" and the pointer files" if also else ""))
    elif (
        also
        and path.startswith(prefix)
        and modes[1] != DELETED
        and PurePosixPath(path).name not in IGNORED_NAMES
    ):
        # The pointer commit empties the folder: a file left in it was pushed after, never trained.
        reasons.append("a pair pushed after the promotion, which would reach main as a plain file")
    if SYMLINK in modes:
        reasons.append("symlink")
    if SUBMODULE in modes:
        reasons.append("submodule")
    if PurePosixPath(path).name in GIT_CONTROL_FILES:
        reasons.append("git control file")
    if any("\udc80" <= c <= "\udcff" for c in path):  # bytes git printed that are not UTF-8
        reasons.append("name is not UTF-8 text")
    return [Offence(shown(path), ", ".join(reasons))] if reasons else []


def shown(path: str) -> str:
    """`path` as one printable line: bytes that are not UTF-8 and control characters escaped."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def guard_branch(
    project: Project, sha: str, base: str | None = None, also: tuple[str, ...] = ()
) -> BranchCheck:
    """Check `sha` against its merge-base with `base` (default: git.remote/git.base_branch, fetched)."""
    git = Git(project.root)
    cfg = project.settings.git
    base_ref = resolve_base(git, cfg.remote, cfg.base_branch, base)
    return check_branch(git, sha, base_ref, project.settings.data.incoming, cfg.remote, also)


def take_incoming(project: Project, sha: str, out: Path, base: str | None = None) -> list[Path]:
    """Guard `sha`, then write its data.incoming files into `out`; BranchRefused with nothing written."""
    check = require_clean(guard_branch(project, sha, base))
    return write_incoming(Git(project.root), check.sha, project.settings.data.incoming, out)


def require_clean(check: BranchCheck) -> BranchCheck:
    """`check`, or BranchRefused with its one-line refusal."""
    if not check.ok:
        raise BranchRefused(check.refusal())
    return check


def write_incoming(git: Git, sha: str, incoming: Path | str, out: Path) -> list[Path]:
    """Write the commit's files under `incoming` into `out` (images/..., masks/...) from git's objects.

    Only regular files are written; placeholders (names starting with a dot) are skipped.
    Every name is checked before the first file is written, and a blob that cannot be read
    (GitError) leaves nothing behind. In a blob-less clone the files are fetched in one round
    trip. The caller checks the branch first (`take_incoming` does both).
    """
    prefix = incoming_prefix(incoming)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BranchRefused(f"{out} is not an empty folder; pass a new or empty --out folder")
    listing = git.run("ls-tree", "-r", "-z", "--full-tree", sha, "--", prefix.rstrip("/"))
    planned: list[tuple[str, Path, str]] = []
    root = out.resolve()
    for entry in filter(None, listing.split("\0")):
        meta, _, path = entry.partition("\t")
        mode, kind, blob = meta.split()
        if kind != "blob" or mode not in REGULAR:
            raise BranchRefused(f"{path} is a {kind} with mode {mode}, not a plain file; nothing was taken")
        relative = PurePosixPath(path[len(prefix) :])
        if not path.startswith(prefix) or _unsafe(relative):
            raise BranchRefused(f"{path!r} would be written outside {out}; nothing was taken")
        if relative.name.startswith("."):
            continue
        target = (root / Path(*relative.parts)).resolve()
        if not target.is_relative_to(root) or target == root:
            raise BranchRefused(f"{path!r} would be written outside {out}; nothing was taken")
        _check_length(path, relative, target)
        planned.append((blob, target, shown(path)))
    if not planned:
        return []
    return write_blobs(git, planned, f"{sha}:{prefix.rstrip('/')}", f"commit {sha[:12]}")


def _check_length(path: str, relative: PurePosixPath, target: Path) -> None:
    """BranchRefused when the file system could not hold the name: better than half the files taken."""
    longest = max(len(os.fsencode(part)) for part in relative.parts)
    size, limit = (longest, NAME_MAX) if longest > NAME_MAX else (len(os.fsencode(target)), PATH_MAX)
    if size > limit:
        what = "a name" if limit == NAME_MAX else "a path"
        raise BranchRefused(
            f"{shown(path)[:80]}… has {what} of {size} bytes, over the {limit} a file system holds; "
            "rename it and push again; nothing was taken"
        )


def _unsafe(relative: PurePosixPath) -> bool:
    parts = relative.parts
    return not parts or relative.is_absolute() or any(p in ("", ".", "..") or "\\" in p for p in parts)
