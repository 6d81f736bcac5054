"""Publishing a promotion: the data branch trades its incoming pairs for pointers, then merges.

After the gate promotes a model, the pipeline calls `publish_promotion`. On the data branch
it commits the removal of `data/incoming/*` (the pairs now live in the dataset store, so
binaries never reach main) together with the updated `data/dataset.json` and the production
pointer files, and hands the branch to the git host: a merge commit here (`local`) or a pull
request with auto-merge (`github`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wms.config import Project
from wms.data.pointer import read_pointer
from wms.errors import BackendError, MainMoved, UsageError
from wms.production import CURRENT_FILE, HISTORY_FILE
from wms.vcs.base import GitHost, Published
from wms.vcs.git import Git, GitError
from wms.vcs.hook import IGNORED_NAMES
from wms.vcs.mainline import main_ref

NOT_ON_DATA_BRANCH = "nothing to publish: not on a data branch"  # Published.line outside a data branch
# data-push.yaml skips pushes whose head commit starts with this: they hold no new data.
POINTER_COMMIT_TITLE = "Data pointers for the promoted model"
MAIN_MERGE_TITLE = "Take in "  # the merge of main into the data branch before the pointer commit
# Used only where git has no identity configured (a fresh CI runner).
BOT_IDENTITY = ("-c", "user.name=wms pipeline", "-c", "user.email=wms-pipeline@users.noreply.github.com")


def publish_promotion(
    project: Project,
    *,
    branch: str | None,
    gate_markdown: str,
    dataset_summary: str,
    host: GitHost | None = None,
    files: Path | None = None,
    sha: str | None = None,
) -> Published:
    """Commit the pointers on the data branch and merge it (local) or open its PR (github).

    `files` is a folder laid out like the project (`data/dataset.json`, `models/...`) holding
    the pointer files to publish; None takes them from the working tree. `branch` None means
    the checked-out branch when it is a data branch; any other data branch is published from
    a temporary worktree at `sha` (default: the branch's tip), so the checkout, which holds
    main's code in CI, is never switched to the untrusted branch. Before the pointer commit
    the branch takes in main, so the pull request never conflicts with promotions made since
    the branch was cut. Returns what was done: its line, e.g. "merged data/20260101-120000
    into main (abc1234)" or the pull request's URL, and whether main has the promotion now;
    the line NOT_ON_DATA_BRANCH when there is no data branch (the pointer files are then
    written to the working tree, which is main). Where an
    earlier publish of the same batch pushed its pointer commit and then failed, the new one
    is built as usual from `sha` and main, and made a fast-forward of the pushed one.
    """
    settings = project.settings
    git = Git(project.root)
    prefix = settings.git.data_branch_prefix
    try:
        top = git.toplevel()
        current = git.current_branch()
    except GitError:
        top, current = None, None
    if branch is None and current is not None and current.startswith(prefix):
        branch = current
    if top is None or branch is None:
        if files is not None:
            _copy_files(files, project.root, pointer_files(project))
        return Published(NOT_ON_DATA_BRANCH, merged=True)
    if not branch.startswith(prefix):
        raise UsageError(
            f"{branch!r} is not a data branch (they start with {prefix!r}, git.data_branch_prefix); "
            "publish runs on the branch the pre-push hook made"
        )
    with _branch_tree(git, top, project.root, branch, current, sha, settings.git.remote) as (tree, root):
        pushed = (
            _pushed_pointer_commit(tree, branch, sha, settings.git.remote)
            if settings.git.host != "local"
            else None
        )
        _take_in_main(tree, project)
        if files is not None:
            _check_built_on_main(project, files, root)
        _copy_files(files or project.root, root, pointer_files(project))
        commit_pointers(tree, tree.toplevel(), dataclasses.replace(project, root=root))
        if pushed is not None:
            _supersede(tree, pushed)
        if host is None:
            from wms.vcs import make_git_host

            host = make_git_host(project, push_from=tree)
        if current != branch and host.name == "local":
            tree.run("branch", "--quiet", "--force", branch, "HEAD")  # the local host merges this ref
        head = tree.rev_parse("HEAD")
        outcome = host.publish(
            branch, _title(root / pointer_files(project)[1], branch), _body(dataset_summary, gate_markdown)
        )
        return dataclasses.replace(outcome, commit=head)


@contextmanager
def _branch_tree(
    git: Git, top: Path, project_root: Path, branch: str, current: str | None, sha: str | None, remote: str
) -> Iterator[tuple[Git, Path]]:
    """The branch's working tree: the checkout itself when it is on the branch, else a temporary worktree."""
    if current == branch or (current is None and sha is None and not _exists(git, branch, remote)):
        yield git, project_root
        return
    start = sha or (branch if _exists_local(git, branch) else f"{remote}/{branch}")
    with tempfile.TemporaryDirectory(prefix="wms-publish-") as tmp:
        tree_top = Path(tmp) / "tree"
        git.run("worktree", "add", "--quiet", "--detach", str(tree_top), start)
        try:
            root = tree_top / project_root.resolve().relative_to(top.resolve())
            yield Git(tree_top), root
        finally:
            git.run("worktree", "remove", "--force", str(tree_top), check=False)
            git.run("worktree", "prune", check=False)


def _exists_local(git: Git, branch: str) -> bool:
    return git.has_commit(f"refs/heads/{branch}")


def _exists(git: Git, branch: str, remote: str) -> bool:
    return _exists_local(git, branch) or git.has_commit(f"refs/remotes/{remote}/{branch}")


def _pushed_pointer_commit(git: Git, branch: str, sha: str | None, remote: str) -> str | None:
    """The pointer commit an earlier publish of the batch `sha` pushed to the remote `branch`, if any.

    Pushing comes before the pull request, so a publish that failed after it (an expired
    token, GitHub down) left the branch's head there; a publish built again from `sha`
    would not be a fast-forward of it.
    """
    if sha is None or remote not in git.run("remote").split():
        return None
    ref = f"refs/remotes/{remote}/{branch}"
    git.run("fetch", "--quiet", "--no-tags", remote, f"+refs/heads/{branch}:{ref}", check=False)
    if not git.has_commit(ref):
        return None
    head = git.rev_parse(ref)
    if head == git.rev_parse(sha) or not git.ok("merge-base", "--is-ancestor", sha, head):
        return None
    return head if git.run("log", "-1", "--format=%s", head).startswith(POINTER_COMMIT_TITLE) else None


def _supersede(tree: Git, pushed: str) -> None:
    """Make HEAD (the pointers built now) a fast-forward of the pointer commit pushed before."""
    if tree.run("rev-parse", "HEAD^{tree}") == tree.run("rev-parse", f"{pushed}^{{tree}}"):
        tree.run("reset", "--quiet", "--hard", pushed)  # the same files: publish that commit again
        return
    message = f"{POINTER_COMMIT_TITLE}; they replace those of {pushed[:12]}, an earlier publish of this batch"
    tree.run(*_identity(tree), "merge", "--quiet", "--no-edit", "-s", "ours", "-m", message, pushed)


def _take_in_main(tree: Git, project: Project) -> None:
    """Merge main into the data branch, so its pull request carries only the pointer change."""
    ref = main_ref(tree, project)
    if ref is None:
        return  # no main to take in (a repository with only data branches)
    if tree.ok("merge-base", "--is-ancestor", ref, "HEAD"):
        return
    if not tree.ok(*_identity(tree), "merge", "--quiet", "--no-edit", "-m", f"{MAIN_MERGE_TITLE}{ref}", ref):
        conflicts = tree.run("diff", "--name-only", "--diff-filter=U", check=False).split()
        tree.run("merge", "--abort", check=False)
        raise BackendError(
            f"the data branch conflicts with {ref} ({', '.join(conflicts) or 'see git'}); data branches may "
            "only add files under data/incoming/ — push the batch again on a branch cut from main"
        )


def _check_built_on_main(project: Project, files: Path, tree_root: Path) -> None:
    """Refuse a promotion built on an older main: its pointer files would undo what main took since.

    After main is taken in, the branch's pointer files are main's. The promotion's dataset
    version must have main's as its parent, and its ledger must continue main's; otherwise
    another batch's promotion (or a move by hand) reached main while this run trained.
    """
    data = Path(project.settings.data.pointer)
    ours, theirs = read_pointer(files / data), read_pointer(tree_root / data)
    main_version = theirs["version"] if theirs else None
    if ours is not None and main_version not in (ours.get("parent"), ours["version"]):
        raise MainMoved(
            f"main's {data} moved to version {main_version} while this run merged onto "
            f"{ours.get('parent') or 'nothing'}: publishing would drop that version's pairs; run the batch "
            "again on main as it is now (`wms pipeline sweep` does)"
        )
    ledger = Path(project.settings.tracking.pointer_dir) / HISTORY_FILE
    ours_text = (files / ledger).read_text() if (files / ledger).is_file() else ""
    main_text = (tree_root / ledger).read_text() if (tree_root / ledger).is_file() else ""
    if ours_text and not ours_text.startswith(main_text):
        raise MainMoved(
            f"main's {ledger} has moves this run's promotion was not built on (production moved while it "
            "trained): publishing would undo them; run the batch again on main as it is now "
            "(`wms pipeline sweep` does)"
        )


def _identity(git: Git) -> tuple[str, ...]:
    """No options where git knows who commits; the bot's name where it does not (a fresh CI runner)."""
    return () if git.run("config", "user.email", check=False) else BOT_IDENTITY


def pointer_files(project: Project) -> list[Path]:
    """The pointer files, relative to the project root."""
    pointer_dir = Path(project.settings.tracking.pointer_dir)
    return [Path(project.settings.data.pointer), pointer_dir / CURRENT_FILE, pointer_dir / HISTORY_FILE]


def _copy_files(source_root: Path, target_root: Path, relative: list[Path]) -> None:
    """Copy the pointer files present under `source_root` to the same places under `target_root`."""
    if source_root.resolve() == target_root.resolve():
        return
    for rel in relative:
        if (source_root / rel).is_file():
            (target_root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source_root / rel, target_root / rel)


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
    candidates = [project.path(p) for p in pointer_files(project)]
    present = [_relative(p, top) for p in candidates if p.exists()]
    if present:
        git.run("add", "--", *present)
    if git.ok("diff", "--cached", "--quiet"):
        return False
    message = (
        f"{POINTER_COMMIT_TITLE}; the incoming pairs now live in the dataset store\n\n"
        f"{incoming} is emptied; {', '.join(present) or 'no pointer file'} updated."
    )
    git.run(*_identity(git), "commit", "--quiet", "-m", message)
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


def _title(current: Path, branch: str) -> str:
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


def commit_move(project: Project, message: str) -> str | None:
    """Commit the production pointer files on the checked-out branch; its short sha, None outside git."""
    git = Git(project.root)
    try:
        top = git.toplevel()
    except GitError:
        return None
    pointer_dir = project.path(project.settings.tracking.pointer_dir)
    present = [_relative(pointer_dir / name, top) for name in (CURRENT_FILE, HISTORY_FILE)]
    git.run("add", "--", *[p for p in present if (top / p).exists()])
    if git.ok("diff", "--cached", "--quiet"):
        return None
    git.run(*_identity(git), "commit", "--quiet", "-m", message, "--", *present)
    return git.short()
