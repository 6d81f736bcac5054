"""`wms data ingest | versions | pull | diff`: the versioned dataset store."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from wms.cli._common import console, dataset_folder, on_interrupt, progress_bar, state
from wms.config import Project
from wms.data.corrections import replaced_masks, restore_ids
from wms.data.manifest import check_version_id
from wms.data.pointer import pointed_version, read_pointer
from wms.data.store import DatasetStore, open_store
from wms.data.validate import validate_dataset
from wms.errors import DataError, UsageError
from wms.words import first_few


def ingest(
    ctx: typer.Context,
    directory: Path = typer.Argument(..., help="Folder with images/ and masks/ of the pairs to add."),
    base: str | None = typer.Option(
        None, "--base", help="Version to add to (default: the one data/dataset.json points at)."
    ),
    move_pointer: bool = typer.Option(
        True, "--pointer/--no-pointer", help="Point data/dataset.json at the new version."
    ),
    correct: bool = typer.Option(
        False,
        "--correct-masks",
        help="A stored photo (same id, same bytes) with another mask replaces the stored mask.",
    ),
    restore_masks: list[str] = typer.Option(
        [],
        "--restore-masks",
        metavar="ID,…",
        help="Pairs whose mask in DIR is one they held before and that was replaced since: put it "
        "back on purpose (implies --correct-masks).",
    ),
) -> None:
    """Add valid pairs (as `wms data validate` checks them) to the store as a new immutable version;
    the same content again is 'no change'."""
    dataset_folder(directory)
    project = state(ctx).project()
    store = open_store(project)
    on_interrupt(
        ctx,
        "ingest stopped before a new version was written: the store's versions and "
        f"{project.settings.data.pointer} are as they were (blobs already uploaded are kept, not sent "
        f"again); run `wms data ingest {directory}` again",
    )
    pointer_path = project.path(project.settings.data.pointer)
    if base is None:
        base = base_version(project, store, pointer_path)
    else:
        store.manifest(_named(base, "--base"))
    _check_valid(directory, project.settings.data.size)
    with progress_bar("uploading blobs", None) as advance:
        result = store.ingest(
            directory,
            base,
            progress=advance,
            expect=advance.expect,
            correct=correct or bool(restore_masks),
            restore=restore_ids(restore_masks),
        )
    if result.no_change:
        lost = result.blobs_written
        restored = f"; restored {lost} blob(s) the store had lost" if lost else ""
        console.print(f"no change: version {base} already holds all {len(result.unchanged)} pairs{restored}")
        return
    fixed = result.corrected
    back = f", {len(result.restored)} of them put back to an earlier mask" if result.restored else ""
    corrected = f"{len(fixed)} stored mask(s) corrected ({', '.join(fixed[:10])}{back}), " if fixed else ""
    console.print(
        f"version {result.version}: {len(result.added)} pairs added to {base or _no_base(project, store)}, "
        f"{corrected}{len(result.unchanged)} already present, {result.blobs_written} new blobs",
        highlight=False,
        soft_wrap=True,
    )
    if move_pointer:
        store.point(pointer_path, result.version, project.settings.store.url)
        console.print(f"{project.settings.data.pointer} now points at {result.version}")
    console.print(result.version)


def _no_base(project: Project, store: DatasetStore) -> str:
    """What a version with no parent was added to: an empty store, or none of the versions the
    store holds (data/dataset.json named none)."""
    if store.count_versions() <= 1:
        return "an empty store"
    return f"no earlier version ({project.settings.data.pointer} named none)"


def base_version(project: Project, store: DatasetStore, pointer_path: Path) -> str | None:
    """The version data/dataset.json here names, once it holds every pair main's does and none of
    the masks main has corrected since: a checkout behind main (or on an old branch) would build a
    version without the batches and corrections promoted since."""
    from wms.vcs.mainline import MainLine

    pointer = str(project.settings.data.pointer)
    version = pointed_version(read_pointer(pointer_path), pointer, store, project.settings.store.url)
    main = MainLine(project)
    on_main = main.dataset_pointer()
    if on_main is None or on_main["version"] == version:
        return version
    ours = store.manifest(version)["pairs"] if version else {}
    theirs = store.manifest(on_main["version"])
    missing = set(theirs["pairs"]) - set(ours)
    masks = {i: e["mask"]["sha256"] for i, e in ours.items() if i in theirs["pairs"]}
    other = {i: m for i, m in masks.items() if m != theirs["pairs"][i]["mask"]["sha256"]}
    older = sorted(replaced_masks(store, theirs, other))  # masks main has corrected since
    if missing or older:
        lacks = [f"{len(missing)} pair(s)"] if missing else []
        lacks += [f"the corrected masks of {len(older)} ({', '.join(older[:5])})"] if older else []
        raise UsageError(
            f"{project.settings.data.pointer} here names {version or 'no version'}, which lacks "
            f"{' and '.join(lacks)} of main's version {on_main['version']} ({main.where}): a version "
            "built on it would leave out the batches promoted since; update this checkout from main "
            f"(git pull), or pass --base {on_main['version']} — nothing was written"
        )
    return version


PREPARE_FIXES = {"wrong_size", "non_binary_mask", "exif_rotated", "bad_mode"}


def _check_valid(directory: Path, size: int) -> None:
    """DataError before anything is written when `directory` is not valid training data at `size`.

    An invalid base makes every later batch fail the pipeline's validation, blamed on the new data.
    """
    with progress_bar("validating", None) as advance:
        report = validate_dataset(directory, size=size, progress=advance, expect=advance.expect)
    if not report.ok:
        codes = sorted({i.code for i in report.errors})
        fix = (  # prepare resizes, binarises and orients; it cannot add a mask or drop a duplicate
            f"raw photos go through `wms data prepare {directory} OUT` first, then ingest OUT"
            if set(codes) <= PREPARE_FIXES
            else "fix the files it lists"
        )
        raise DataError(
            f"{directory} is not valid {size}x{size} training data: {len(report.errors)} error(s) "
            f"({', '.join(codes)}); {fix} (details: `wms data validate {directory}`) — nothing was written"
        )


def _named(version: str, given: str = "dataset version") -> str:
    """A version id given on the command line; one of the wrong form is a usage error (exit 2)."""
    try:
        return check_version_id(version, given, "pick one from `wms data versions`")
    except DataError as exc:
        raise UsageError(str(exc)) from None


def versions(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    last: int = typer.Option(20, "--last", min=1, help="How many of the latest versions to list."),
    every: bool = typer.Option(False, "--all", help="List every version (reads every manifest)."),
) -> None:
    """List the latest dataset versions (--all: every one), oldest first."""
    project = state(ctx).project()
    store = open_store(project)
    infos = store.versions(None if every else last)
    if as_json:
        print(json.dumps([asdict(v) for v in infos], indent=2))
        return
    if not infos:
        console.print("no dataset versions yet; add pairs with `wms data ingest DIR`")
        return
    pointer = read_pointer(project.path(project.settings.data.pointer))
    current = pointer["version"] if pointer else None
    table = Table("version", "parent", "pairs", "created (UTC)", "")
    for v in infos:
        table.add_row(
            v.id, v.parent or "", str(v.pairs), v.created_at[:19], "← data/dataset.json" * (v.id == current)
        )
    console.print(table)
    older = store.count_versions() - len(infos) if len(infos) == last and not every else 0
    if older > 0:
        console.print(f"{older} older version(s) not shown; --last N or --all lists them", highlight=False)


def pull(
    ctx: typer.Context,
    version: str = typer.Argument(..., help="Version id (see `wms data versions`)."),
    out: Path = typer.Argument(..., help="Folder to write images/ and masks/ into."),
) -> None:
    """Write a version's pairs to a folder; only missing or changed files are fetched, every byte verified."""
    _named(version)
    store = open_store(state(ctx).project())
    on_interrupt(
        ctx,
        f"pull stopped; every file already in {out} is whole (and checked again); run it again for the rest",
    )
    pairs = store.manifest(version)["counts"]["pairs"]
    with progress_bar(f"pulling {version}", 2 * pairs) as advance:
        result = store.pull(version, out, progress=advance)
    console.print(f"{out}: {result.fetched} files fetched, {result.reused} already there (sha256 checked)")
    if result.replaced:
        shown = first_few(result.replaced, 3)
        console.print(
            f"replaced {len(result.replaced)} file(s) that differed from version {version} (edited since it "
            f"was pulled, or damaged): {shown}; to keep a corrected mask, ingest it first "
            "(`wms data ingest DIR --correct-masks`), then pull",
            highlight=False,
            soft_wrap=True,
        )
    if result.extra:
        console.print(f"{len(result.extra)} file(s) in {out} are not in version {version}; left alone")


def diff(
    ctx: typer.Context,
    a: str = typer.Argument(..., help="The older version."),
    b: str = typer.Argument(..., help="The newer version."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the ids added, removed and changed from version A to version B."""
    result = open_store(state(ctx).project()).diff(_named(a), _named(b))
    if as_json:
        print(json.dumps(asdict(result), indent=2))
        return
    for label, ids in (("added", result.added), ("removed", result.removed), ("changed", result.changed)):
        shown = ", ".join(ids[:20]) + (f" … (+{len(ids) - 20})" if len(ids) > 20 else "")
        console.print(f"{label:8} {len(ids):5}  {shown}", highlight=False)
