"""Publishing a promotion: the data branch trades its incoming pairs for pointers, then merges.

After the gate promotes a model, the pipeline calls `publish_promotion`. On the data branch
it commits the removal of `data/incoming/*` (the pairs now live in the dataset store, so
binaries never reach main) together with the updated `data/dataset.json` and the production
pointer files, and hands the branch to the git host: a merge commit here (`local`) or a pull
request with auto-merge (`github`).
"""

from __future__ import annotations

import json
from pathlib import Path

from wms.config import Project
from wms.data.pointer import read_pointer
from wms.errors import UsageError
from wms.vcs.base import GitHost
from wms.vcs.git import Git, GitError
from wms.vcs.hook import IGNORED_NAMES

NOT_ON_DATA_BRANCH = "nothing to publish: not on a data branch"
# training-data-pipeline.yaml skips pushes whose head commit starts with this: they hold no new data.
POINTER_COMMIT_TITLE = "Data pointers for the promoted model"
# Used only where git has no identity configured (a fresh CI runner).
BOT_IDENTITY = ("-c", "user.name=wms pipeline", "-c", "user.email=wms-pipeline@users.noreply.github.com")


def publish_promotion(
    project: Project,
    *,
    branch: str | None,
    gate_markdown: str,
    dataset_summary: str,
    host: GitHost | None = None,
) -> str:
    """Commit the pointers on the data branch and merge it (local) or open its PR (github).

    `branch` None means the current branch, when it is a data branch. Returns a one-line
    outcome, e.g. "merged data/20260101-120000 into main (abc1234)" or the pull request's URL.
    """
    settings = project.settings
    git = Git(project.root)
    prefix = settings.git.data_branch_prefix
    try:
        current = git.current_branch()
    except GitError:
        if branch is None:
            return NOT_ON_DATA_BRANCH  # no git here at all: a plain local run
        raise
    if branch is None:
        if current is None or not current.startswith(prefix):
            return NOT_ON_DATA_BRANCH
        branch = current
    if not branch.startswith(prefix):
        raise UsageError(
            f"{branch!r} is not a data branch (they start with {prefix!r}, git.data_branch_prefix); "
            "publish runs on the branch the pre-push hook made"
        )
    if current != branch:
        if current is not None:
            raise UsageError(
                f"the working tree is on {current!r}, not {branch!r}; run `git checkout {branch}` first"
            )
        git.run("checkout", "--quiet", "-B", branch)  # a detached CI checkout: name the commit

    top = git.toplevel()
    commit_pointers(git, top, project)
    if host is None:
        from wms.vcs import make_git_host

        host = make_git_host(project)
    return host.publish(branch, _title(project, branch), _body(dataset_summary, gate_markdown))


def commit_pointers(git: Git, top: Path, project: Project) -> bool:
    """Replace the incoming pairs by the pointer files in one commit; False when nothing changed."""
    settings = project.settings
    incoming = _relative(project.path(settings.data.incoming), top)
    tracked = git.ls_files(incoming)
    if tracked:
        git.run("rm", "-r", "-q", "--", incoming)
        keep = [p for p in tracked if Path(p).name in IGNORED_NAMES]
        if keep:  # the placeholder keeps the folder where people drop new pairs
            git.run("checkout", "HEAD", "--", *keep)
    pointer_dir = project.path(settings.tracking.pointer_dir)
    candidates = [
        project.path(settings.data.pointer),
        pointer_dir / "production_current.json",
        pointer_dir / "production_history.jsonl",
    ]
    present = [_relative(p, top) for p in candidates if p.exists()]
    if present:
        git.run("add", "--", *present)
    if git.ok("diff", "--cached", "--quiet"):
        return False
    identity = () if git.run("config", "user.email", check=False) else BOT_IDENTITY
    message = (
        f"{POINTER_COMMIT_TITLE}; the incoming pairs now live in the dataset store\n\n"
        f"{incoming} is emptied; {', '.join(present) or 'no pointer file'} updated."
    )
    git.run(*identity, "commit", "--quiet", "-m", message)
    return True


def dataset_summary(project: Project) -> str:
    """A short Markdown description of the version `data/dataset.json` points at."""
    pointer = read_pointer(project.path(project.settings.data.pointer))
    if pointer is None:
        return "no dataset version yet (data/dataset.json is missing)"
    counts = ", ".join(f"{k}: {v}" for k, v in (pointer.get("counts") or {}).items())
    return f"dataset version `{pointer['version']}` (parent `{pointer.get('parent') or 'none'}`)" + (
        f" — {counts}" if counts else ""
    )


def _title(project: Project, branch: str) -> str:
    current = project.path(project.settings.tracking.pointer_dir) / "production_current.json"
    try:
        entry = json.loads(current.read_text())
        return f"{branch}: model version {entry['to_version']} to production"
    except (OSError, ValueError, KeyError):
        return f"{branch}: new data and a better model"


def _body(summary: str, gate_markdown: str) -> str:
    return (
        f"## Dataset\n\n{summary.strip()}\n\n## Quality gate\n\n{gate_markdown.strip()}\n\n"
        "<sub>Opened by `wms` after the training-data pipeline promoted the model. The incoming pairs "
        "are in the dataset store; this branch replaces them with `data/dataset.json`.</sub>\n"
    )


def _relative(path: Path, top: Path) -> str:
    try:
        return path.resolve().relative_to(top.resolve()).as_posix()
    except ValueError:
        raise UsageError(
            f"{path} is outside the git repository {top}; fix data.* or tracking.* paths"
        ) from None
