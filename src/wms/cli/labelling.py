"""`wms data suggest`: a labelling batch of the photos the model is least sure of."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from wms.acquisition import DEFAULT_MIN_DISTANCE, STRATEGIES
from wms.cli._common import capture_inbox, console, on_interrupt, progress_bar, state, styled
from wms.data.manifest import folded

if TYPE_CHECKING:
    import numpy as np

    from wms.config import Project


def suggest(
    ctx: typer.Context,
    count: int = typer.Option(..., "--count", "-n", help="How many photos to choose."),
    out: Path = typer.Option(..., "--out", "-o", help="New folder for the labelling batch."),
    source: str = typer.Option(
        "inbox",
        "--from",
        help="`inbox` (the capture inbox, serve.capture_dir), a folder of photos, or an s3:// inbox "
        "(copied).",
    ),
    model: str = typer.Option("production", "--model", "-m", help="Alias, version number or model folder."),
    min_distance: int = typer.Option(
        DEFAULT_MIN_DISTANCE,
        "--min-distance",
        help="Photos whose 64-bit difference hashes differ in this many bits or fewer count as one.",
    ),
    strategy: str = typer.Option(
        STRATEGIES[0],
        "--strategy",
        help="power: drawn at random with odds proportional to the score; band: the highest scores after "
        "passing over the most unsure fifth (outliers the model cannot learn from yet); diverse: one per "
        "cluster of a score-weighted k-means over the photos; top: the highest scores only; random: "
        "drawn uniformly (on the real photos no strategy beat random ones reliably: "
        "docs/labelling-and-drift.md).",
    ),
    image_url: str | None = typer.Option(
        None,
        "--image-url",
        help="Prefix of the photos' URLs in labelstudio.json, each file name appended percent-encoded "
        "(default: /data/local-files/?d=NAME/images/).",
    ),
) -> None:
    """Rank unlabelled photos by the model's uncertainty and a mirrored second opinion; write a batch.

    The batch is drawn with odds proportional to the score (--strategy power), so it leans to
    the photos the model is least sure of and stays as varied as the source; --strategy band
    passes over the most unsure fifth (outliers) and takes the next most unsure, --strategy
    diverse one photo per cluster of a score-weighted k-means, --strategy top the highest scores,
    --strategy random draws uniformly (duplicates still passed over). On the real photos no strategy
    bought more Dice than random photos reliably (docs/labelling-and-drift.md).

    OUT gets images/ (JPEG and PNG photos as they came, upright where EXIF turns them; others as
    PNG, which every browser shows), prelabels/ (the model's masks), ranking.csv, ranking.json, and
    labelstudio.json + labelstudio.xml (Label Studio's task import with polygon pre-annotations,
    and the labelling configuration it matches). Label the photos, export the project as JSON,
    and `wms data from-labelstudio EXPORT --batch OUT` puts the pairs into data/incoming/images
    and data/incoming/masks: commit and push them, as any new pairs.
    """
    from wms.acquisition import select
    from wms.errors import RegistryError, UsageError
    from wms.inbox import scan_photos
    from wms.serve.fetch import load_model
    from wms.suggest import score_photos, undecided, write_batch
    from wms.uncertainty import UNSURE_HIGH

    if count <= 0:
        raise UsageError(f"--count {count}: ask for at least one photo, e.g. --count 20")
    if strategy not in STRATEGIES:
        raise UsageError(f"--strategy {strategy}: choose one of {', '.join(STRATEGIES)}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a new folder for the batch")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(
            f"--out {out} already holds files; name a new folder (a batch is never merged into another)"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the folder for --out {out} ({exc.strerror}); name another") from None
    project = state(ctx).project()
    on_interrupt(
        ctx, f"suggest stopped; nothing was written to {out} (a batch appears only whole); run it again"
    )
    folder, copied_from = capture_inbox(ctx, project, None if source == "inbox" else source)
    scan = scan_photos(folder, copied_from)
    where = copied_from or scan.folder
    if not scan.photos:
        raise UsageError(f"nothing to suggest: {scan.summary()}")
    labelled, version = _labelled_ids(project)
    fresh = [p for p in scan.photos if folded(p.name) not in labelled]
    if not fresh:
        raise UsageError(
            f"nothing to suggest: the {len(scan.photos)} photo(s) in {where} are all pairs of dataset "
            f"version {version} already; move labelled photos out of it"
        )
    try:
        served = load_model(project, model)
    except RegistryError as exc:
        raise UsageError(f"cannot load model {model!r}: {exc}") from None

    with progress_bar(f"scoring with model {served.version}", len(fresh)) as advance:
        ranked, unreadable = score_photos(served.segmenter, fresh, advance)
    if not ranked:
        raise UsageError(f"none of the {len(fresh)} photo(s) in {where} could be decoded")
    selection = select(ranked, count, min_distance, strategy)
    extra = {
        "strategy": strategy,
        "scored": len(ranked),
        "unreadable": [p.path.name for p in unreadable],
        "skipped_files": [str(path.name) for path, _ in scan.skipped],
        "min_distance": min_distance,
    }
    write_batch(served.segmenter, selection, out, served.version, str(where), image_url, extra)

    console.print(
        scan.summary() + (f"; {len(unreadable)} could not be decoded" if unreadable else ""),
        highlight=False,
        soft_wrap=True,
    )
    if undecided(ranked):
        console.print(
            styled(
                f"the score ranks none of these photos: all {len(ranked)} score 1 (model "
                f"{served.version} finds no window in them, or is sure of none of their pixels, none over "
                f"{UNSURE_HIGH}); they are ranked by mean pixel entropy, and --strategy power draws as "
                "random does",
                "yellow",
            ),
            highlight=False,
            soft_wrap=True,
        )
    if len(fresh) < len(scan.photos):
        console.print(
            f"passed over {len(scan.photos) - len(fresh)} photo(s) already labelled: pairs of dataset "
            f"version {version} ({project.settings.data.pointer}) under the same name",
            highlight=False,
            soft_wrap=True,
        )
    passed = len(selection.same_bytes) + len(selection.near_duplicates)
    if passed:
        console.print(
            f"passed over {len(selection.same_bytes)} photo(s) with the same bytes as a chosen one and "
            f"{len(selection.near_duplicates)} near-duplicate(s) (dHash within {min_distance} bits)",
            highlight=False,
        )
    if selection.too_unsure:
        console.print(
            f"passed over the {len(selection.too_unsure)} most unsure photo(s) (--strategy band; "
            "listed in ranking.json as too_unsure, --strategy top takes them)",
            highlight=False,
        )
    if len(selection.chosen) < count:
        console.print(styled(f"only {len(selection.chosen)} distinct photo(s) to choose from", "yellow"))
    top = ", ".join(f"{c.name} ({c.score:.2f})" for c in selection.chosen[:3])
    console.print(
        f"wrote {len(selection.chosen)} photo(s) to {out} with model {served.version}; most unsure: {top}",
        highlight=False,
        soft_wrap=True,
    )


def _labelled_ids(project: Project) -> tuple[set[str], str | None]:
    """The pair ids (folded as the store compares them) of the dataset version data/dataset.json
    names, and that version: a photo labelled and pushed is a pair under its own name
    (from-labelstudio keeps it)."""
    from wms.data.pointer import read_pointer
    from wms.data.store import open_store
    from wms.errors import WmsError

    try:
        pointer = read_pointer(project.path(project.settings.data.pointer))
        if pointer is None:
            return set(), None
        version = str(pointer["version"])
        pairs = open_store(project).manifest(version)["pairs"]
    except WmsError as exc:
        console.print(
            styled(f"cannot tell which photos are labelled already, so none is passed over: {exc}", "yellow"),
            highlight=False,
            soft_wrap=True,
        )
        return set(), None
    return {folded(pid) for pid in pairs}, version


def from_labelstudio(
    ctx: typer.Context,
    export: Path = typer.Argument(..., help="Label Studio's JSON export of the labelled batch."),
    batch: Path = typer.Option(..., "--batch", help="The batch folder `wms data suggest` wrote."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Dataset folder to add images/ and masks/ to (default: data.incoming)."
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace pairs of the same name already in OUT (e.g. photos labelled again).",
    ),
) -> None:
    """Turn a labelled batch back into pairs: OUT/images (the batch's photos) and OUT/masks (PNG 0/255).

    The pairs are prepared to data.size, as `wms data prepare` does (left at the photos' size
    where data.auto_prepare is on: the pipeline prepares them). Then commit and push them as any
    new pairs (data/incoming/ by default): the pipeline merges, validates, trains and gates them.
    """
    import json

    from wms.errors import DataError, UsageError
    from wms.labelstudio import labelled_masks
    from wms.train.preprocess import image_header

    try:
        masks, left_out = labelled_masks(json.loads(export.read_text()))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {export} as a Label Studio JSON export ({exc})") from None
    photos = {p.stem: p for p in (batch / "images").glob("*") if p.is_file()} if batch.is_dir() else {}
    if not photos:
        raise UsageError(f"{batch}/images holds no photos; name the folder `wms data suggest` wrote")
    project = state(ctx).project()
    target = out or project.path(project.settings.data.incoming)
    labelled = []
    for name, _, mask in masks:
        if name not in photos:
            left_out.append((name, f"no such photo in {batch}/images"))
            continue
        size = image_header(photos[name]).size
        if size != (mask.shape[1], mask.shape[0]):
            left_out.append(
                (name, f"the photo is {size[0]}x{size[1]}, its labels {mask.shape[1]}x{mask.shape[0]}")
            )
            continue
        labelled.append((photos[name], mask))
    for name, why in left_out:
        console.print(styled("left out", "yellow"), f"{name}: {why}", highlight=False, soft_wrap=True)
    if not labelled:
        raise DataError(
            f"no labelled photo of {batch} in {export}, so nothing was written; "
            "label them in Label Studio, then export the project again as JSON"
        )
    data = project.settings.data
    side = None if data.auto_prepare else data.size
    _write_pairs(labelled, target, side, overwrite)
    check = f"wms data validate {target}" + (" --any-size" if side is None else "")
    shape = f"prepared to {side}x{side}" if side else "at the photos' size (data.auto_prepare)"
    console.print(
        f"wrote {len(labelled)} pair(s), {shape}, to {target}/images and {target}/masks; "
        f"check them with `{check}`, then commit and push",
        highlight=False,
        soft_wrap=True,
    )


def _write_pairs(
    labelled: list[tuple[Path, np.ndarray]], target: Path, size: int | None, overwrite: bool = False
) -> None:
    """Each photo with its mask (0/255 PNG) into target/images and target/masks, prepared to `size`
    x `size` as the pipeline's validation wants them (None: as labelled).

    A pair of the same name already there with other content (another photo of that name, or
    labels since changed) is refused before anything is written, unless `overwrite`.
    """
    import shutil
    import tempfile

    from PIL import Image

    from wms.data.pairs import IMAGE_SUFFIXES
    from wms.data.prepare import prepare_dataset
    from wms.errors import DataError, UsageError
    from wms.train.preprocess import open_image

    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "labelled"
        for sub in ("images", "masks"):
            (staged / sub).mkdir(parents=True)
        for photo, mask in labelled:
            if photo.suffix.lower() in IMAGE_SUFFIXES:
                shutil.copyfile(photo, staged / "images" / photo.name)
            else:  # a .webp or .tif photo (a batch from before or by hand): a dataset holds JPEG or PNG
                open_image(photo).save(staged / "images" / f"{photo.stem}.png")
            Image.fromarray(mask.astype("uint8") * 255, mode="L").save(staged / "masks" / f"{photo.stem}.png")
        if size is not None:
            report = prepare_dataset(staged, Path(tmp) / "prepared", size=size)
            if report.skipped:
                raise DataError(
                    f"cannot prepare the labelled pairs, nothing was written: {report.skipped[0].reason}"
                )
            staged = report.out
        placed = {sub: sorted((staged / sub).iterdir()) for sub in ("images", "masks")}
        clashes = sorted(
            {
                old.stem
                for sub, paths in placed.items()
                for path in paths
                for old in _namesakes(target / sub, path.stem)
                if old.suffix.lower() != path.suffix.lower() or old.read_bytes() != path.read_bytes()
            }
        )
        if clashes and not overwrite:
            raise UsageError(
                f"{target} already holds other pairs named {', '.join(clashes[:5])}"
                + (f" and {len(clashes) - 5} more" if len(clashes) > 5 else "")
                + "; nothing was written: pass --overwrite to replace them, or --out another folder"
            )
        for sub, paths in placed.items():
            (target / sub).mkdir(parents=True, exist_ok=True)
            for path in paths:
                for old in _namesakes(target / sub, path.stem):
                    old.unlink()  # the same name under another suffix would be a second pair
                shutil.copyfile(path, target / sub / path.name)


def _namesakes(folder: Path, stem: str) -> list[Path]:
    """The files in `folder` named `stem` with any suffix (a pair's photo or mask)."""
    import glob

    return [p for p in folder.glob(f"{glob.escape(stem)}.*") if p.stem == stem]
