"""`wms predict`: write a mask for each photo using a registered model, and say which to check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from wms.cli._common import console, progress_bar, report_file, state
from wms.errors import UsageError
from wms.files import write_text_atomic

if TYPE_CHECKING:
    from wms.config import Project
    from wms.predict import ProbabilityModel

SHOWN = 10  # photos to check listed by name; the rest are counted


def predict(
    ctx: typer.Context,
    images: list[Path] = typer.Argument(
        ..., help="Photos (JPEG, PNG, WEBP, BMP or TIFF, read by content), or folders of them."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the masks (`<stem>.png`, 0/255)."),
    model: str = typer.Option(
        "production", "--model", "-m", help="Alias, version number, MLflow run id, or a model folder."
    ),
    json_file: Path | None = typer.Option(
        None, "--json", help="Also write, per photo, its mask, size, foreground share and uncertainty."
    ),
) -> None:
    """Segment the counter window of each photo; masks match each photo's size after EXIF orientation.

    The model's ONNX export runs on ONNX Runtime, as `wms serve` and the MLflow model run it, so
    the masks are the ones production serves (a model folder without model.onnx runs on torch).
    Each photo also gets an uncertainty score (0 sure ... 1 unsure); the photos whose verdict
    is "check this one" are listed, the least sure first.
    """
    from wms.predict import expand_folders, predict_files
    from wms.uncertainty import CHECK

    missing = [path for path in images if not path.exists()]
    if missing:  # said before the model is fetched
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(f"{missing[0]} does not exist{more}: name photos or folders of them")
    report_file("--json", json_file)
    images = expand_folders(images)
    segmenter = _load(state(ctx).project(), model)
    with progress_bar("predicting", len(images)) as advance:
        done = predict_files(segmenter, images, out, progress=advance)
    if json_file is not None:
        body = {"model": model, "predictions": [p.to_dict() for p in done]}
        write_text_atomic(json_file, json.dumps(body, indent=2) + "\n")
    console.print(f"wrote {len(done)} mask(s) to {out} with model {model}", highlight=False)
    unsure = sorted((p for p in done if p.uncertainty.verdict == CHECK), key=lambda p: -p.uncertainty.score)
    if unsure:
        console.print(f"{len(unsure)} of {len(done)} to check (least sure first):", highlight=False)
        for p in unsure[:SHOWN]:
            u = p.uncertainty
            console.print(
                f"  {p.image.name}  score {u.score:.2f}  regions {u.regions}  "
                f"unsure pixels {100 * u.uncertain_share:.0f}%",
                highlight=False,
            )
        if len(unsure) > SHOWN:
            where = f" (see {json_file})" if json_file else ""
            console.print(f"  … and {len(unsure) - SHOWN} more{where}", highlight=False)
    else:
        console.print("the model is sure of every photo", highlight=False)
    if json_file is not None:
        console.print(f"per-photo report: {json_file}", highlight=False)


def _load(project: Project, model: str) -> ProbabilityModel:
    """A model folder as it is, or a registry model fetched: its ONNX export, else its torch weights."""
    from wms.serve.fetch import named_model

    with named_model(project, model) as named:
        folder = named.folder
        if (folder / "model.onnx").is_file():
            from wms.train.export import OnnxSegmenter

            return OnnxSegmenter.load(folder)
        from wms.train.segmenter import Segmenter

        return Segmenter.load(folder)
