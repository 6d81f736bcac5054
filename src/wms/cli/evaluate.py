"""`wms evaluate`: score a registered model (or a model folder) on a labelled dataset, image by image."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import cast

import typer

from wms.cli._common import console, dataset_folder, progress_bar, report_file, state
from wms.files import write_text_atomic


class SplitChoice(StrEnum):
    """Which pairs of the dataset to score."""

    all = "all"
    test = "test"
    val = "val"
    train = "train"


def evaluate(
    ctx: typer.Context,
    model_ref: str = typer.Argument(
        ..., help="Alias (production, previous), version number, MLflow run id, or a model folder."
    ),
    dataset: Path = typer.Argument(..., help="Dataset folder holding images/ and masks/."),
    json_file: Path | None = typer.Option(
        None, "--json", help="Also write the mean and per-image scores to this JSON file."
    ),
    split: SplitChoice = typer.Option(
        SplitChoice.all,
        "--split",
        help="Score every pair, or only one split (the same stable splits training uses).",
    ),
    worst: int | None = typer.Option(
        None,
        "--worst",
        min=1,
        help="Draw the N photos with the lowest Dice, true and predicted masks over each, into --out.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for the --worst overlays and their index.html (worst first)."
    ),
) -> None:
    """Score a model's masks against the dataset's: mean Dice and IoU over images, at each mask's size."""
    from wms.data.pairs import find_pairs
    from wms.data.splits import Split, split_pairs
    from wms.errors import DataError
    from wms.serve.fetch import named_model
    from wms.train.evaluate import evaluate as score_pairs
    from wms.train.evaluate import summarize
    from wms.train.segmenter import Segmenter

    _check_worst(worst, out)
    report_file("--json", json_file)
    dataset_folder(dataset)
    project = state(ctx).project()
    if split is SplitChoice.all:
        pairs = find_pairs(dataset).pairs
    else:
        pairs = split_pairs(project, dataset)[cast(Split, split.value)]
    if not pairs:
        raise DataError(
            f"no complete image/mask pairs in the {split.value} split of {dataset}; "
            f"see `wms data validate {dataset}` or choose another --split"
        )

    with named_model(project, model_ref) as named:  # a folder (`wms model download`) or the registry's
        identity, segmenter = named.identity(), Segmenter.load(named.folder)
    with progress_bar("evaluating", len(pairs)) as advance:
        scores = score_pairs(segmenter, pairs, progress=advance)
    mean = summarize(scores)

    label = f"model {model_ref}" + (f" (version {identity['version']})" if "version" in identity else "")
    console.print(
        f"{label}: Dice {mean['dice']:.4f}  IoU {mean['iou']:.4f}  on {mean['n']} images"
        f" ({split.value} of {dataset})",
        highlight=False,
        soft_wrap=True,
    )
    if json_file is not None:
        report = {
            "model": model_ref,
            **identity,
            "dataset": str(dataset),
            "split": split.value,
            "mean": {"dice": mean["dice"], "iou": mean["iou"]},
            "n": mean["n"],
            "per_image": [{"id": s.id, "dice": s.dice, "iou": s.iou} for s in scores],
        }
        write_text_atomic(json_file, json.dumps(report, indent=2) + "\n")
        console.print(f"wrote {json_file}", highlight=False, soft_wrap=True)
    if worst is not None and out is not None:
        from wms.worst import save_worst

        shown = min(worst, len(scores))
        with progress_bar("drawing the worst photos", shown) as advance:
            page = save_worst(
                out, segmenter, scores, pairs, worst, f"{label}: worst of {split.value} of {dataset}", advance
            )
        console.print(f"wrote {page} ({shown} worst photos)", highlight=False, soft_wrap=True)


def _check_worst(worst: int | None, out: Path | None) -> None:
    """--worst and --out go together, and --out must be a folder this command can write into."""
    from wms.errors import UsageError

    if worst is not None and out is None:
        raise UsageError(f"--worst {worst} needs a folder to draw into: add --out DIR")
    if out is None:
        return
    if worst is None:
        raise UsageError(f"--out {out} holds the worst photos: add --worst N (e.g. --worst 10)")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a folder (it is created if missing)")
    try:  # now, not after minutes of scoring
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the --out folder {out} ({exc.strerror}); name another") from None
