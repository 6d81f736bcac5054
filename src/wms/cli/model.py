"""`wms model`: the registered model versions and their aliases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.table import Table

from wms.cli._common import WmsGroup, console, state, styled
from wms.config import Project
from wms.errors import RegistryError, UsageError
from wms.registry import RUN_ID, MlflowRegistry
from wms.times import parse_time

if TYPE_CHECKING:
    from wms.production import Following

app = typer.Typer(cls=WmsGroup, no_args_is_help=True, help="Registered model versions and aliases.")


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show every version with its test metrics and aliases (production, previous)."""
    records = MlflowRegistry(state(ctx).project()).list()
    if as_json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return
    if not records:
        console.print("no model versions yet; run `wms pipeline run --new-data DIR` or `wms demo`")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for column in ("version", "aliases", "test Dice", "IoU", "dataset", "created (UTC)", "run"):
        table.add_column(column, no_wrap=True)
    for r in records:
        table.add_row(
            r.version,
            ", ".join(r.aliases),
            f"{r.metrics.get('test_dice', float('nan')):.4f}",
            f"{r.metrics.get('test_iou', float('nan')):.4f}",
            r.tags.get("dataset_version", "")[:8],
            r.created_at[:16].replace("T", " "),
            r.run_id[:8],
        )
    console.print(table)


@app.command()
def show(
    ctx: typer.Context,
    ref: str = typer.Argument("production", help="An alias (production, previous) or a version number."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One version: its aliases, test metrics and the tags that trace it (data, code, gate, hashes)."""
    record = MlflowRegistry(state(ctx).project()).get(ref)
    if as_json:
        print(json.dumps(record.to_dict(), indent=2))
        return
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("version", record.version)
    table.add_row("aliases", ", ".join(record.aliases) or "—")
    table.add_row("created (UTC)", record.created_at.replace("T", " "))
    for metric, score in sorted(record.metrics.items()):
        table.add_row(metric, f"{score:.4f}")
    for tag, text in sorted(record.tags.items()):
        table.add_row(tag, text)
    console.print(table)


def _follows_here(project: Project) -> bool:
    """Whether this checkout is main itself and moves the alias at once (local git host, or no git)."""
    from wms.vcs.mainline import MainLine

    main = MainLine(project)
    return main.ref is None and (main.top is None or project.settings.git.host == "local")


def _follow(project: Project, registry: MlflowRegistry, entry: dict[str, Any]) -> None:
    """Commit the move (in git), then move the alias now where this checkout is main."""
    from wms.vcs.publish import commit_move

    console.print(
        styled(f"{entry['action']}:", "bold green"),
        f"production_current.json names version {entry['to_version']} "
        f"(was {entry['from_version'] or 'nothing'}); the move is in the ledger",
        highlight=False,
    )
    settings = project.settings
    title = f"Production: version {entry['to_version']} ({entry['action']}: {entry['reason']})"
    sha = commit_move(project, title)
    if _follows_here(project):
        _reconcile_or_say(project, registry, sha)
        return
    where = f"committed {sha}" if sha else "written"
    console.print(
        f"{where}: production moves when this reaches {settings.git.base_branch} — push it (or open a pull "
        f"request); the release workflow then runs `wms model reconcile`",
        highlight=False,
    )


def _reconcile_or_say(project: Project, registry: MlflowRegistry, sha: str | None) -> None:
    """Move the alias to what the pointer names; a failure says the move is recorded and what finishes it."""
    from wms.production import reconcile

    try:
        result = reconcile(registry, project.path(project.settings.tracking.pointer_dir))
    except RegistryError as exc:
        recorded = f"committed {sha}" if sha else "written"
        raise RegistryError(
            f"the move is {recorded}, but the registry did not follow it: {exc}; once that is mended, `wms "
            "model reconcile` (or this command again) moves the alias to what production_current.json names"
        ) from None
    console.print(result.summary, highlight=False)


def _holds(registry: MlflowRegistry, now: Following) -> bool:
    """Whether the registry has the model the pointer file names, under its number: one restored
    from a backup older than that promotion lacks it, or numbers another model so."""
    from wms.production import check_same_model

    try:
        check_same_model("production_current.json", now.current or {}, registry.get(str(now.wanted)))
    except RegistryError:  # ModelNotFound among them
        return False
    return True


def _unfinished(project: Project, registry: MlflowRegistry) -> str | None:
    """Finish the move production_current.json records where the registry did not follow it (MLflow
    failed half-way, or the alias was moved by hand); the version it moved to, None if none."""
    from wms.production import read_following

    if not _follows_here(project):
        return None  # the release workflow moves the alias when main has the move
    now = read_following(registry, project.path(project.settings.tracking.pointer_dir))
    if not now.behind or not _holds(registry, now):
        return None  # nothing left to finish, or a version a restored registry lost: this move replaces it
    console.print(
        f"production_current.json names version {now.wanted}, but the production alias "
        f"names {now.was or 'nothing'}: the registry follows it first",
        highlight=False,
    )
    _reconcile_or_say(project, registry, None)
    return now.wanted


@app.command()
def promote(
    ctx: typer.Context,
    version: str = typer.Argument(..., help="The version to put in production (see `wms model list`)."),
    reason: str = typer.Option(..., "--reason", "-r", help="Why, for the ledger (required)."),
) -> None:
    """Put a version in production by hand; the old one becomes `previous`.

    The gate is not asked: use it to promote a candidate a person reviewed. The move is
    written to models/production_current.json and models/production_history.jsonl and, in a
    git checkout, committed: main is what production follows. On main with the local git
    host (or outside git) the alias moves at once; otherwise when the commit reaches main.
    """
    from wms.production import plan_move

    project = state(ctx).project()
    registry = MlflowRegistry(project)
    pointer_dir = project.path(project.settings.tracking.pointer_dir)
    by = "wms model promote"
    finished = _unfinished(project, registry)
    if finished is not None and finished == registry.get(version).version:
        return
    _follow(
        project, registry, plan_move(registry, pointer_dir, version, action="promote", reason=reason, by=by)
    )


@app.command()
def rollback(
    ctx: typer.Context,
    reason: str = typer.Option("rolled back by hand", "--reason", "-r", help="Why, for the ledger."),
) -> None:
    """Put back the version that served before this one (again: the one before that): a commit on main."""
    from wms.production import plan_rollback

    project = state(ctx).project()
    registry = MlflowRegistry(project)
    pointer_dir = project.path(project.settings.tracking.pointer_dir)
    if _unfinished(project, registry) is not None:
        console.print("run `wms model rollback` again to step back from it", highlight=False)
        return
    _follow(project, registry, plan_rollback(registry, pointer_dir, reason=reason, by="wms model rollback"))


@app.command()
def reconcile(
    ctx: typer.Context,
    deploy: bool = typer.Option(False, "--deploy", help="Also deploy the version main names."),
) -> None:
    """Make the registry follow main: point `production` at what models/production_current.json names.

    Run it on a checkout of main (the release workflow does when that file changes on main):
    after a pull request merges, after a rollback commit or its revert. `previous` keeps the
    version production had. With --deploy, the version is also deployed to `deploy.target`.
    """
    from wms.cli.compute import job_lease

    project = state(ctx).project()
    with job_lease(project):  # single: its workflow job holds the run's lease on the instance
        _reconcile(project, deploy)


def _reconcile(project: Project, deploy: bool) -> None:
    from wms.production import reconcile as follow_main
    from wms.report import write_github_output, write_step_summary

    registry = MlflowRegistry(project)
    result = follow_main(registry, project.path(project.settings.tracking.pointer_dir))
    console.print(result.summary, highlight=False)
    write_github_output(
        {"model_version": result.wanted or "", "was": result.was or "", "moved": str(result.moved).lower()}
    )
    write_step_summary(f"### Production\n\n{result.summary}\n")
    if deploy and result.wanted is not None:
        from wms.cli.compute import note
        from wms.deploy import make_deployer

        deployed = make_deployer(project, note, registry).deploy(result.wanted)
        console.print(deployed.summary, highlight=False)


@app.command()
def download(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="An alias, a version number or an MLflow run id."),
    out: Path = typer.Argument(..., help="Folder to write the model files into (created)."),
) -> None:
    """Copy a model's files (weights, spec, ONNX) into OUT and check them against their sha256."""
    from wms.train.spec import verify_model_folder

    registry = MlflowRegistry(state(ctx).project())
    run_id = ref if RUN_ID.fullmatch(ref) else registry.get(ref).run_id
    with registry.fetched(run_id) as folder:  # checked there; checked again here to say what was
        checked = verify_model_folder(folder, registry.recorded_hashes(run_id))
        out.mkdir(parents=True, exist_ok=True)
        for entry in sorted(folder.iterdir()):
            if entry.is_dir():  # code/ of the MLflow model
                shutil.copytree(entry, out / entry.name, dirs_exist_ok=True)
            else:
                shutil.copy2(entry, out / entry.name)
    names = ", ".join(sorted(p.name + "/" * p.is_dir() for p in out.iterdir()))
    line = f"{out}: {names} ({checked or 'no recorded hash to check'})"
    console.print(line, highlight=False, soft_wrap=True)


@app.command()
def migrate(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say which versions would change."),
) -> None:
    """Make versions registered as bare files MLflow models, so `mlflow models serve` can load them.

    Each version's folder gets an MLmodel (the pyfunc flavor over its model.onnx), added beside
    the files it has; those stay as they are, and `wms` reads old and new versions alike.
    """
    notes = {
        "added": "MLmodel added: an MLflow model now",
        "would add": "would get an MLmodel",
        "already": "already an MLflow model",
        "no onnx": "left as is: no model.onnx (trained with train.export_onnx = false) for MLflow to run",
    }
    done = MlflowRegistry(state(ctx).project()).migrate(dry_run=dry_run)
    for m in done:
        line = f"version {m.version} (run {m.run_id[:8]}): {notes[m.change]}"
        console.print(line, highlight=False, soft_wrap=True)
    changed = sorted({m.version for m in done if m.change in ("added", "would add")}, key=int)
    verb = "would change" if dry_run else "changed"
    console.print(
        f"{verb} {len(changed)} of {len(done)} version(s)" + (f": {', '.join(changed)}" if changed else ""),
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def history(
    ctx: typer.Context,
    at: str | None = typer.Option(
        None, "--at", help="Only say what was in production at this UTC time, e.g. 2026-11-26T12:00."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Every move of `production` from the ledger (models/production_history.jsonl)."""
    from wms.production import production_at, read_history

    project = state(ctx).project()
    pointer_dir = project.path(project.settings.tracking.pointer_dir)
    if at is not None:
        when = parse_time(at)
        if when is None:
            raise UsageError(f"--at {at!r} is not a date or time; write e.g. 2026-11-26T12:00")
        entry = production_at(pointer_dir, when)
        if as_json:
            print(json.dumps(entry, indent=2))
        elif entry is None:
            console.print(f"nothing was in production at {at}")
        else:
            console.print(
                f"version {entry['to_version']} was in production at {at} "
                f"({entry.get('action', '?')} at {entry['at']}: {entry.get('reason', '')})",
                highlight=False,
            )
        return
    entries = read_history(pointer_dir)
    if as_json:
        print(json.dumps(entries, indent=2))
        return
    if not entries:
        console.print(f"no moves recorded in {pointer_dir}")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("move", no_wrap=True)
    table.add_column("Dice", no_wrap=True)
    table.add_column("why (by whom)", ratio=1, overflow="fold")
    for e in entries:
        table.add_row(
            str(e["at"])[:16].replace("T", " "),
            f"{e.get('action', '?')} {e.get('from_version') or '—'} → {e['to_version']}",
            f"{e.get('metrics', {}).get('dice', float('nan')):.4f}",
            f"{e.get('reason', '')} ({e.get('by', '')}, {e.get('actor', '?')})",
        )
    console.print(table)
