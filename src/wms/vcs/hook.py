"""The pre-push hook: new data pushed to main goes to a `data/<timestamp>` branch instead.

    wms hooks install            # once per clone
    git push origin main         # data → data/20260101-120000, main stays where it was
    git push --no-verify         # bypass the hook for one push

Git runs `.git/hooks/pre-push REMOTE URL` with one line per pushed ref on stdin:
`<local ref> <local sha> <remote ref> <remote sha>`. A push to the base branch whose new
commits add or change files under `data/incoming/` is sent, unchanged, to a new branch
on the same remote (where the training-data pipeline picks it up), and the push to main
is stopped. Data mixed with other changes is refused: it must arrive as separate pushes.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from wms.errors import UsageError
from wms.vcs.git import ZERO_SHA, Git, GitError
from wms.words import first_few

MARKER = "wms hook pre-push"
# Placeholders that only keep an empty folder in git; they are not data.
IGNORED_NAMES = {".gitkeep", ".gitignore", "README.md"}
SHOWN = 3


@dataclass(frozen=True)
class PushedRef:
    """One line of what git tells a pre-push hook."""

    local_ref: str
    local_sha: str
    remote_ref: str
    remote_sha: str


@dataclass(frozen=True)
class HookOutcome:
    """What the hook decided: 0 lets the push go on; the message goes to stderr."""

    exit_code: int
    message: str = ""
    data_branch: str | None = None


def parse_push_lines(text: str) -> list[PushedRef]:
    """The refs git is about to push, from the hook's stdin."""
    refs = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4:
            refs.append(PushedRef(*parts))
    return refs


def pre_push(
    git: Git,
    *,
    remote: str,
    url: str,
    refs: list[PushedRef],
    incoming: str,
    base_branch: str,
    branch_prefix: str,
    now: datetime,
    github: bool = False,
) -> HookOutcome:
    """Decide about one push; pushes the data branch itself when it redirects data."""
    incoming = incoming.strip("/") + "/"
    base_ref = f"refs/heads/{base_branch}"
    for ref in refs:
        if ref.remote_ref != base_ref or ref.local_sha == ZERO_SHA:
            continue  # another branch, or a deletion: not ours to judge
        base = git.push_base(ref.local_sha, ref.remote_sha, remote)
        data = [
            p for p in git.changed_files(base, ref.local_sha, diff_filter="ACMRT") if _is_data(p, incoming)
        ]
        if not data:
            continue
        other = [p for p in git.changed_files(base, ref.local_sha) if not p.startswith(incoming)]
        upstream = f"{remote}/{base_branch}" if git.has_commit(ref.remote_sha) else git.short(base)
        if other:
            return HookOutcome(1, _mixed_message(data, other, incoming, remote, base_branch, upstream))
        sent = git.remote_branches_at(ref.local_sha, remote, branch_prefix)
        if sent:
            return HookOutcome(
                1,
                _sent_before_message(ref.local_sha, sent[0], git, remote, url, github, base_branch, upstream),
                sent[0],
            )
        branch = f"{branch_prefix}{now.strftime('%Y%m%d-%H%M%S')}"
        try:
            git.push(remote, f"{ref.local_sha}:refs/heads/{branch}", no_verify=True)
        except GitError as exc:
            return HookOutcome(1, _not_sent_message(exc, branch, remote, base_branch))
        follow = _follow_hint(url, branch, github)
        return HookOutcome(
            1,
            "\n".join(
                [
                    f"wms: this push to {base_branch} carries new data ({_files(data)} under {incoming}), "
                    "so it went to a branch of its own:",
                    f"  pushed {git.short(ref.local_sha)} to {branch} on {remote}",
                    f"  follow the pipeline: {follow}",
                    f"{base_branch} was not pushed (on purpose): it gets the data, as a pointer to the "
                    "dataset version, when the pipeline promotes a better model.",
                    f"To line up your {base_branch} with {remote} again: git reset --keep {upstream} "
                    f"(the commit stays on {branch}).",
                    'git now reports "failed to push some refs": that is expected. '
                    "To push data straight to main anyway: git push --no-verify",
                ]
            ),
            branch,
        )
    return HookOutcome(0)


def _sent_before_message(
    sha: str, branch: str, git: Git, remote: str, url: str, github: bool, base_branch: str, upstream: str
) -> str:
    return "\n".join(
        [
            f"wms: this data was sent already: {git.short(sha)} is {branch} on {remote}, so nothing was "
            "pushed again (a second branch would run the same batch twice).",
            f"  follow the pipeline: {_follow_hint(url, branch, github)}",
            f"To line up your {base_branch} with {remote}: git reset --keep {upstream} "
            f"(the commit stays on {branch}); new data then goes in a new commit.",
        ]
    )


def _not_sent_message(exc: GitError, branch: str, remote: str, base_branch: str) -> str:
    return (
        f"wms: this push to {base_branch} carries new data, which goes to a branch of its own, "
        f"but sending it to {branch} on {remote} failed ({exc}). Nothing was pushed, {base_branch} "
        "neither, and your commit is still here: once the cause is fixed (the network, the remote), "
        f"push again the same way (git push {remote} {base_branch}); the data then goes to a new branch."
    )


def _is_data(path: str, incoming: str) -> bool:
    return path.startswith(incoming) and Path(path).name not in IGNORED_NAMES


def _files(paths: list[str]) -> str:
    return f"{len(paths)} file" + ("" if len(paths) == 1 else "s")


def _mixed_message(
    data: list[str], other: list[str], incoming: str, remote: str, base_branch: str, upstream: str
) -> str:
    folder = incoming.rstrip("/")
    data_named, other_named = first_few(data, SHOWN), first_few(other, SHOWN)
    return (
        f"wms: push refused: it mixes new data ({data_named}) with other changes ({other_named}). "
        "Data and code must reach main separately, so split them into two commits: "
        f"git reset --soft {upstream} && git restore --staged {folder} && git commit -m 'code' && "
        f"git add {folder} && git commit -m 'data'; then push the code first with "
        f"`git push {remote} HEAD~1:{base_branch}`, and the data with `git push {remote} {base_branch}`. "
        "(To push as it is anyway: git push --no-verify)"
    )


_REMOTE = re.compile(
    r"^(?:[a-z+]+://)?(?:[^@/]+@)?(?P<host>[^:/]+)(?::\d+)?[:/](?P<path>[^/]+/[^/]+?)(?:\.git)?/?$"
)


# The workflow that trains a data branch (.github/workflows): GitHub runs it from main once the
# branch's check (Data push) passed, so it is listed under main, titled "Train <branch>".
TRAINING_WORKFLOW = "training-data-pipeline.yaml"


def _follow_hint(url: str, branch: str, github: bool) -> str:
    match = _REMOTE.match(url)
    if match and (github or match["host"] == "github.com"):
        actions = f"https://{match['host']}/{match['path']}/actions"
        return (
            f"{actions}?query={quote('branch:' + branch, safe='')} (its check), "
            f"then the run 'Train {branch}' on {actions}/workflows/{TRAINING_WORKFLOW}"
        )
    return f"git switch {branch} && wms pipeline run"


def hook_script() -> str:
    """The `pre-push` file `wms hooks install` writes: it runs this interpreter's wms.

    git runs the hook in the root of the working tree, and `python -m`/`-c` put the current
    folder first on sys.path: a `wms/` folder or a `click.py` in the checked-out branch would
    run instead of the installed code. `-P` (Python 3.11) leaves the current folder out.
    """
    python = shlex.quote(sys.executable)
    return (
        "#!/bin/sh\n"
        f"# {MARKER}: installed by `wms hooks install`; remove with `wms hooks uninstall`.\n"
        "# New data pushed to main goes to a data/<timestamp> branch; bypass once: git push --no-verify\n"
        f"if ! {python} -P -c 'import wms' 2>/dev/null; then\n"
        f'  echo "wms: cannot run {python} to check this push; reinstall wms and run '
        '`wms hooks install --force`, or bypass once with git push --no-verify" >&2\n'
        "  exit 1\n"
        "fi\n"
        f'exec {python} -P -m wms hook pre-push "$@"\n'
    )


def install_hook(git: Git, *, force: bool = False) -> Path:
    """Write the pre-push hook; an existing hook that is not ours stays unless `force`."""
    hooks = git.hooks_dir()
    path = hooks / "pre-push"
    if path.exists() and MARKER not in path.read_text(errors="replace") and not force:
        raise UsageError(
            f"{path} already exists and is not a wms hook; merge it by hand, or replace it with "
            "`wms hooks install --force`"
        )
    hooks.mkdir(parents=True, exist_ok=True)
    path.write_text(hook_script())
    path.chmod(0o755)
    return path


def uninstall_hook(git: Git) -> Path | None:
    """Remove our pre-push hook; returns its path, or None when there was none of ours."""
    path = git.hooks_dir() / "pre-push"
    if path.exists() and MARKER in path.read_text(errors="replace"):
        path.unlink()
        return path
    return None
