"""`wms vcs`: guard data branches and take their new pairs, publish a promoted data branch,
comment validation reports, list runners, keep a schedule on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from wms.cli._common import WmsGroup, console, state
from wms.errors import UsageError

if TYPE_CHECKING:
    from wms.vcs.guard import BranchCheck

app = typer.Typer(
    cls=WmsGroup,
    no_args_is_help=True,
    help=(
        "The git host (git.host = local | github): refuse data branches that change more than new "
        "data and take their pairs, merge or open the pull request of a promoted data branch, post "
        "validation reports, list self-hosted runners, keep a scheduled workflow on."
    ),
)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path} ({exc.strerror}); pass an existing file") from None


@app.command()
def publish(
    ctx: typer.Context,
    branch: str | None = typer.Option(
        None, "--branch", "-b", help="The data branch (default: the current one, if it is a data branch)."
    ),
    gate_report: Path = typer.Option(..., "--gate-report", help="The gate's Markdown report (gate.md)."),
    summary: str | None = typer.Option(
        None, "--summary", help="Dataset summary for the PR (default: from data/dataset.json)."
    ),
) -> None:
    """Commit data/dataset.json and the production pointers on the data branch, then merge it or open its PR.

    The incoming pairs are removed from the branch (they are in the dataset store). With
    git.host = local the branch is merged into git.base_branch with a merge commit and
    deleted; with github a pull request is created (or updated), labelled, and set to
    auto-merge (or merged at once where the repository does not allow auto-merge).
    """
    from wms.report import write_github_output, write_step_summary
    from wms.vcs.publish import dataset_summary, publish_promotion

    project = state(ctx).project()
    gate_markdown = _read(gate_report, "gate report")
    outcome = publish_promotion(
        project,
        branch=branch,
        gate_markdown=gate_markdown,
        dataset_summary=summary if summary is not None else dataset_summary(project),
    )
    console.print(outcome.line, highlight=False, soft_wrap=True)
    write_github_output({"outcome": outcome.line})
    write_step_summary(f"### Publish\n\n{outcome.line}\n")


# A report handed to another job reaches its step through the environment, where Linux takes at
# most 128 KiB per variable (past it the step cannot start); a comment shows 65,536 characters.
HANDED_OVER_BYTES = 60_000


@app.command("comment-validation")
def comment_validation(
    ctx: typer.Context,
    report: Path = typer.Option(..., "--report", help="The validation report (Markdown)."),
    sha: str | None = typer.Option(None, "--sha", help="The commit to comment on (default: HEAD)."),
    hand_over: bool = typer.Option(
        False,
        "--hand-over",
        help="Post nothing: put the report in $GITHUB_OUTPUT (`report`, cut to fit an environment "
        "variable), for a later job that holds the write token to post.",
    ),
) -> None:
    """Post a failed validation report: a commit comment (github) or a file in .wms/reports (local).

    On GitHub the commit also gets the status "WMS training": failure, rejected (with the job's
    GITHUB_TOKEN, which needs statuses: write). The sweeper's look reads it and records the batch
    rejected, so no compute starts for pairs that cannot train.
    """
    import os

    from wms.report import write_github_output
    from wms.vcs import Git, make_git_host
    from wms.vcs.commit_status import batch_statuses

    body = _read(report, "validation report")
    if hand_over:
        write_github_output({"report": _cut(body, HANDED_OVER_BYTES)})
        return
    project = state(ctx).project()
    sha = sha or Git(project.root).rev_parse("HEAD")
    incoming = project.settings.data.incoming.as_posix()
    next_step = (
        f"Fix or remove these files under `{incoming}/`, commit, and push to "
        f"{project.settings.git.base_branch} again: the hook sends the batch to a new data branch. "
        f"`wms data validate {incoming} --incoming` checks it on your machine first."
    )
    where = make_git_host(project).comment_on_commit(
        sha, f"### WMS: the new data did not pass validation\n\n{body.rstrip()}\n\n{next_step}\n"
    )
    console.print(f"validation report for {sha[:7]}: {where}", highlight=False, soft_wrap=True)
    write_github_output({"comment": where})
    statuses = batch_statuses(project, os.environ, lambda line: console.print(line, highlight=False))
    if statuses is not None:
        statuses.show_check_refusal(sha)


def _cut(text: str, limit: int) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    kept = encoded[:limit].decode(errors="ignore").rstrip()
    return kept + "\n\n… (cut to fit; the validate job's summary holds the whole report)\n"


@app.command()
def runners(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the repository's self-hosted GitHub Actions runners and whether they are online."""
    from wms.vcs import make_github_host

    found = make_github_host(state(ctx).project()).list_runners()
    if as_json:
        print(json.dumps([r.__dict__ for r in found], indent=2))
        return
    if not found:
        console.print("no self-hosted runners registered")
    for r in found:
        busy = " (busy)" if r.busy else ""
        console.print(f"{r.name}  {r.status}{busy}  {', '.join(r.labels)}", highlight=False)


@app.command("keep-schedule")
def keep_schedule(
    ctx: typer.Context,
    workflow: str = typer.Argument(..., help="The workflow's file name, e.g. compute-reaper.yaml."),
) -> None:
    """Enable a scheduled workflow again, so that GitHub keeps running its schedule.

    GitHub turns off the schedules of a public repository after 60 days without activity, and a
    later push does not turn them back on; enabling the workflow through the API counts as
    activity for it. The reaper and the sweeper run this on themselves once a day (the token
    needs actions: write). A workflow someone turned off does not run, so it stays off.
    """
    from wms.vcs import make_github_host

    if "/" in workflow or not workflow.endswith((".yaml", ".yml")):
        raise UsageError(f"{workflow!r} is not a workflow file name; give e.g. compute-reaper.yaml")
    make_github_host(state(ctx).project()).enable_workflow(workflow)
    console.print(f"{workflow}: enabled, its schedule runs on", highlight=False)


SHA_OPTION = typer.Option(
    ..., "--sha", help="The pushed commit of the data branch (in the workflows: the one Data push checked)."
)
BASE_OPTION = typer.Option(
    None, "--base", help="Compare with this ref (default: git.remote/git.base_branch, fetched now)."
)


def _checked(
    ctx: typer.Context, sha: str, base: str | None, pull_request: bool = False, summary_if_clean: bool = True
) -> BranchCheck:
    """Check the commit against its base and write the step summary (with `summary_if_clean` off,
    only a refusal's); BranchRefused when it may not run."""
    from wms.report import write_step_summary
    from wms.vcs.guard import guard_branch, require_clean
    from wms.vcs.publish import pointer_files

    project = state(ctx).project()
    also = tuple(p.as_posix() for p in pointer_files(project)) if pull_request else ()
    check = guard_branch(project, sha, base, also)
    if summary_if_clean or not check.ok:
        write_step_summary(check.markdown())
    return require_clean(check)


@app.command("guard-branch")
def guard_branch(
    ctx: typer.Context,
    sha: str = SHA_OPTION,
    base: str | None = BASE_OPTION,
    pull_request: bool = typer.Option(
        False,
        "--pull-request",
        help="Also allow the pointer files the pipeline commits: the check of a data branch's pull request.",
    ),
) -> None:
    """Refuse a data-branch commit that changes anything but files under data.incoming (exit 1).

    Compared with its merge-base with the base branch: a path outside data/incoming/ (renames
    included), a symlink or submodule anywhere, or a .gitattributes/.gitmodules file refuses
    it, naming the paths. Run it before any step that holds a secret. With --pull-request, the
    head of a data branch's pull request may also change the pointer files (data.pointer and
    production_*.json), and may leave no file in data.incoming (the pointer commit empties it): a
    labeller's commit pushed after the promotion's, while its pull request waits to auto-merge,
    code or more pairs, is refused, and as a required check this keeps it out of main.
    """
    check = _checked(ctx, sha, base, pull_request)
    console.print(
        f"commit {check.sha[:12]}: {len(check.changed)} changed path(s), all under {check.incoming}"
        + (" or pointer files" if check.also else ""),
        highlight=False,
    )


@app.command("guard-main")
def guard_main(
    ctx: typer.Context,
    sha: str = typer.Option(..., "--sha", help="The commit bound for main: a pull request's head, or main."),
    base: str | None = typer.Option(
        None,
        "--base",
        help="Compare with this ref, e.g. a push's previous main (default: git.remote/git.base_branch).",
    ),
) -> None:
    """Refuse a commit bound for main from anything but a data branch that adds files under
    data.incoming (exit 1).

    New pairs reach the dataset through a data branch: the pre-push hook sends them there, and
    main gets only the pointers of a promoted batch. Pushed to main past the hook (not
    installed, --no-verify), or merged with a pull request from another branch, they would
    stay in main as plain files, never trained. The refusal says how to send them again.
    """
    from wms.report import write_step_summary
    from wms.vcs.guard import BranchRefused, guard_branch, pairs_refusal

    check = guard_branch(state(ctx).project(), sha, base)
    if check.pairs:
        write_step_summary(f"### New pairs outside a data branch\n\n{pairs_refusal(check)}\n")
        raise BranchRefused(pairs_refusal(check))
    console.print(
        f"commit {check.sha[:12]}: no new file under {check.incoming} ({len(check.changed)} changed path(s))",
        highlight=False,
    )


@app.command("take-incoming")
def take_incoming(
    ctx: typer.Context,
    sha: str = SHA_OPTION,
    out: Path = typer.Option(..., "--out", help="A new or empty folder for images/ and masks/."),
    base: str | None = BASE_OPTION,
) -> None:
    """Guard the commit, then write its data.incoming files into OUT without checking the branch out.

    The files are read from git's object store; nothing from the branch is run.
    """
    from wms.report import write_github_output, write_step_summary
    from wms.vcs import Git
    from wms.vcs.guard import write_incoming

    # The guard step before it wrote the check's table to the job's summary; a second copy is noise.
    check = _checked(ctx, sha, base, summary_if_clean=False)
    project = state(ctx).project()
    written = write_incoming(Git(project.root), check.sha, project.settings.data.incoming, out)
    line = f"took {len(written)} file(s) of commit {check.sha[:12]} into {out}"
    console.print(line, highlight=False)
    write_step_summary(f"Data branch guard passed; {line}.\n")
    write_github_output({"incoming": str(out), "files": str(len(written))})
