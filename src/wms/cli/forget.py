"""`wms data forget`: delete a person's photo wherever WMS keeps it, and name what is left."""

from __future__ import annotations

from pathlib import Path

import typer

from wms.cli._common import console, on_interrupt, state, styled
from wms.errors import BackendError, DataError, UsageError
from wms.words import first_few

HOW = "docs/labelling-and-drift.md, 'When someone asks you to delete their photo'"
SHOWN = 4  # versions, commits, runs named in a line: a store a year old holds a photo in hundreds


def forget(
    ctx: typer.Context,
    photos: list[str] = typer.Argument(
        None,
        metavar="PHOTO",
        help="The photo the person sent (a file), its sha256, or its capture id (16 hex digits).",
        show_default=False,
    ),
    pairs: list[str] = typer.Option(
        [],
        "--pair",
        metavar="NAME",
        help="A pair of the dataset by its name (images/NAME.*), for a photo that did not come "
        "through the capture and was changed before it was pushed (repeatable).",
        show_default=False,
    ),
    mlflow_artifacts: str = typer.Option(
        "",
        "--mlflow-artifacts",
        metavar="S3_URL",
        help="Where the MLflow server keeps run files (its --artifacts-destination; `terraform output "
        "-raw mlflow_artifacts_uri`), so that the bucket's old versions of the drawings go too.",
        show_default=False,
    ),
    batches: Path | None = typer.Option(
        None,
        "--batches",
        metavar="DIR",
        help="A folder of labelling batches (`wms data suggest --out` wrote them, at any depth): "
        "their copies of the photo and its pre-label go, and its task leaves labelstudio.json.",
        show_default=False,
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be deleted, and where."),
) -> None:
    """Delete a person's photo wherever WMS keeps it, and name the copies it cannot delete.

    A captured photo is named by the first 16 hex digits of its sha256, and keeps that name
    through `wms data suggest`, `wms data from-labelstudio` and the push, so the photo (or its
    sha256) finds every copy. The photo also finds a pair pushed under a name of its own when
    the pair's photo is that file byte for byte; --pair names one that was resized or converted
    first (from your labelling records). Deleted: its capture in serve.capture_dir (a folder or
    s3://); in the dataset store, after a new version without the pair is written and
    data/dataset.json names it (commit that to main), the pair's photo and mask, unless another
    pair holds the same file (older versions that held it can no longer be pulled whole); the
    old versions a versioned bucket keeps of those files; the drawings MLflow runs keep of it
    (worst/, the val sheet); this machine's merged dataset and training cache. Named, not
    changed: the commits that added it under data/incoming/ (rewriting shared history is yours
    to do), and the branches whose data/dataset.json names a version that holds it (a batch's
    pull request that would bring it back). Everything is looked up before anything is deleted.
    Exit 0 when no copy is left, 1 when the history, a branch or the bucket still holds one.
    """
    from wms.cli.data_versions import base_version
    from wms.data.store import open_store
    from wms.forget import (
        delete_from_batches,
        delete_from_inbox,
        delete_local_copies,
        find_in_batches,
        find_in_branches,
        find_in_history,
        find_in_store,
        forget_in_store,
        ids_to_forget,
        open_inbox,
        purge_bucket,
    )
    from wms.forget_runs import delete_drawings, drawing_urls, find_drawings
    from wms.registry import MlflowRegistry

    if not photos and not pairs:
        raise UsageError("name the photo to delete: the file, its sha256 or capture id, or --pair NAME")
    if batches is not None and not batches.is_dir():
        raise UsageError(f"--batches {batches} is no folder: give the one your labelling batches are in")
    project = state(ctx).project()
    store, pointer, registry = (
        open_store(project),
        project.path(project.settings.data.pointer),
        MlflowRegistry(project),
    )
    # Everything is looked up before anything is deleted: an unreachable store or MLflow stops here.
    base = base_version(project, store, pointer)  # refuses a checkout behind main
    manifests = store.manifests()
    ids = ids_to_forget(photos or [], pairs, manifests)
    found = find_in_store(store, ids, manifests)
    drawings = find_drawings(registry, ids, {pid: where.val for pid, where in found.items()})
    every_drawing = [d for pid in ids for d in drawings[pid]]
    history = find_in_history(project.root, project.settings.data.incoming, ids)
    git = project.settings.git
    pointer_path = str(project.settings.data.pointer)
    main = (git.base_branch, git.remote)
    branches = find_in_branches(project.root, pointer_path, main, found, fetch=git.host == "github")
    in_batches = find_in_batches(batches, ids) if batches else {pid: [] for pid in ids}
    capture_dir = project.settings.serve.capture_dir
    inbox = open_inbox(capture_dir if "://" in capture_dir else str(project.path(capture_dir)))

    on_interrupt(ctx, f"forget stopped part way; run it again with the same {len(ids)} photo(s) to finish")
    version, erased = (None, 0) if dry_run else forget_in_store(store, base, found)
    if version:
        store.point(pointer, version, project.settings.store.url)
    deleted = delete_from_inbox(inbox, ids, dry_run)
    if not dry_run:
        delete_drawings(registry, every_drawing)
        delete_from_batches(in_batches)
    try:  # last: what the deletions above left in a versioned bucket
        urls = drawing_urls(every_drawing, mlflow_artifacts)
        old_versions, purge_failed = purge_bucket(inbox, store, ids, found, urls, dry_run), ""
    except BackendError as exc:  # what is deleted stays deleted: say what is left, and go on
        old_versions, purge_failed = 0, str(exc)
    trained_here = any(where.versions for where in found.values())
    cache = project.path(project.settings.train.cache_dir)
    local = delete_local_copies(project.state_dir, cache, ids, dry_run) if trained_here else []

    verb = "would delete" if dry_run else "deleted"
    left = []
    for pid in ids:
        console.print(styled(f"photo {pid}", "bold"))
        files = ", ".join(deleted[pid])
        _say(f"capture inbox {capture_dir}: {f'{verb} {files}' if files else 'not there'}")
        where = found[pid]
        if not where.versions:
            _say("dataset store: in no version")
        else:
            shared = f"; {len(where.shared)} file(s) another pair holds too stay" if where.shared else ""
            files = (
                f"{verb} its {len(where.stored)} file(s)" if where.stored else "its files were erased before"
            )
            _say(f"dataset store: {files}, held by version(s) {first_few(where.versions, SHOWN)}{shared}")
        if batches:
            copies = sorted({str(path.parent.parent) for path in in_batches[pid]})
            said = f"{verb} its copies in {first_few(copies, SHOWN)}" if copies else "in none"
            _say(f"labelling batches: {said}")
        runs = drawings[pid]
        shown = first_few([f"{d.path} of run {d.run_id[:8]}" for d in runs], SHOWN)
        _say(f"MLflow: {f'{verb} {shown}' if runs else 'no drawing of it'}")
        commits = (history or {}).get(pid, [])
        if history is None:
            _say("repository: the project is no git repository")
        elif commits:
            _say(f"repository: still in the history, added by commit(s) {first_few(commits, SHOWN)}")
            left.append(pid)
        else:
            _say("repository: in no commit")
        if branches[pid]:
            _say(
                f"branches: {first_few(branches[pid], SHOWN)} point at a version that holds it; merged, "
                "their pull request brings it back: close it, or run `wms data forget` again after the merge"
            )
            left.append(pid)
    found_nowhere = not any(
        deleted[pid] or found[pid].versions or drawings[pid] or in_batches[pid] or (history or {}).get(pid)
        for pid in ids
    )
    if found_nowhere and photos:
        _say(
            "found nowhere WMS keeps photos: one resized or converted before its push (`wms data "
            "prepare`) is no longer the file the person sent; find its pair's name (in your labelling "
            "records) and give it with --pair NAME",
            indent="",
        )
    if old_versions:
        _say(f"the bucket's old versions of these files: {verb} {old_versions}", indent="")
    if purge_failed:
        _say(purge_failed, indent="")
    if local:
        _say(
            f"this machine: {verb} {len(local)} working file(s) (the pipeline's merged dataset, the "
            f"training cache {cache}, which the next run fills again)",
            indent="",
        )
    if version:
        _say(
            f"{project.settings.data.pointer} now names version {version}, without the pair(s); commit it "
            f"to main (a pull request on GitHub) so that the next run trains without them; {erased} "
            "file(s) erased from the store",
            indent="",
        )
    kept = ["the bucket keeps old versions of their files (above)"] if purge_failed else []
    if left:
        kept.append(
            f"{len(left)} of {len(ids)} photo(s) are still in the repository's history or its "
            f"branches ({', '.join(dict.fromkeys(left))})"
        )
    if kept:
        raise DataError(f"{'; '.join(kept)}; see {HOW}")


def _say(text: str, indent: str = "  ") -> None:
    console.print(indent + text, highlight=False, soft_wrap=True)
