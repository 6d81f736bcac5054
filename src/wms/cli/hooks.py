"""`wms hooks` installs the pre-push hook; `wms hook pre-push` is what git runs."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import typer

from wms.cli._common import WmsGroup, console, err_console, state, styled

app = typer.Typer(
    cls=WmsGroup,
    no_args_is_help=True,
    help=(
        "Install the git pre-push hook that sends new data to a `data/<timestamp>` branch.\n\n"
        "Drop pairs in `data/incoming/`, commit, `git push origin main`: the hook pushes the commit "
        "to `data/YYYYMMDD-HHMMSS`, where the training-data pipeline picks it up, and stops the push "
        "to main. Bypass it once with `git push --no-verify`."
    ),
)
runner = typer.Typer(cls=WmsGroup, no_args_is_help=True, help="What git hooks run (not meant for people).")


@app.command()
def install(
    force: bool = typer.Option(False, "--force", help="Replace a pre-push hook that is not wms's."),
) -> None:
    """Write `pre-push` into this repository's hooks folder (core.hooksPath is honoured)."""
    from wms.vcs.git import Git
    from wms.vcs.hook import install_hook

    path = install_hook(Git(_repo_root()), force=force)
    console.print(f"installed {path}; pushes of new data to main now go to a data/<timestamp> branch")
    console.print(styled("bypass it once with: git push --no-verify", "dim"))


@app.command()
def uninstall() -> None:
    """Remove the wms pre-push hook (a hook that is not wms's is left alone)."""
    from wms.vcs.git import Git
    from wms.vcs.hook import uninstall_hook

    path = uninstall_hook(Git(_repo_root()))
    console.print(f"removed {path}" if path else "no wms pre-push hook installed; nothing to do")


@runner.command("pre-push")
def pre_push(
    ctx: typer.Context,
    remote: str = typer.Argument(..., help="The remote's name (or its URL when it has none)."),
    url: str = typer.Argument("", help="The remote's URL."),
) -> None:
    """Read git's `<local ref> <local sha> <remote ref> <remote sha>` lines from stdin and judge the push."""
    from wms.errors import WmsError
    from wms.vcs.git import Git
    from wms.vcs.hook import parse_push_lines
    from wms.vcs.hook import pre_push as judge

    refs = parse_push_lines(sys.stdin.read())
    try:
        project = state(ctx).project()
        cfg = project.settings.git
        git = Git(_repo_root())
        incoming = project.path(project.settings.data.incoming).resolve()
        outcome = judge(
            git,
            remote=remote,
            url=url or remote,
            refs=refs,
            incoming=incoming.relative_to(git.toplevel().resolve()).as_posix(),
            base_branch=cfg.base_branch,
            branch_prefix=cfg.data_branch_prefix,
            now=datetime.now(UTC),
            github=cfg.host == "github",
        )
    except (WmsError, ValueError) as exc:
        err_console.print(
            f"wms pre-push hook: {exc} (bypass once with git push --no-verify)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    if outcome.message:
        err_console.print(outcome.message, highlight=False, soft_wrap=True)
    raise typer.Exit(outcome.exit_code)


def _repo_root() -> Path:
    from wms.errors import UsageError
    from wms.vcs.git import Git, GitError

    try:
        return Git(Path.cwd()).toplevel()
    except GitError:
        raise UsageError(f"{Path.cwd()} is not inside a git repository; run this in your clone") from None
