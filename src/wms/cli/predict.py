"""`wms predict`: write a mask for each photo using a registered model."""

from __future__ import annotations

from pathlib import Path

import typer

from wms.cli._common import console, progress_bar, state


def predict(
    ctx: typer.Context,
    images: list[Path] = typer.Argument(..., help="Photos (JPEG or PNG)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the masks (<stem>.png, 0/255)."),
    model: str = typer.Option("production", "--model", "-m", help="Alias, version number or MLflow run id."),
) -> None:
    """Segment the counter window of each photo; masks match each photo's size after EXIF orientation."""
    from wms.predict import predict_files
    from wms.registry import MlflowRegistry
    from wms.train.segmenter import Segmenter

    registry = MlflowRegistry(state(ctx).project())
    with registry.fetched(model) as folder:
        segmenter = Segmenter.load(folder)
    with progress_bar("predicting", len(images)) as advance:
        written = predict_files(segmenter, images, out, progress=advance)
    console.print(f"wrote {len(written)} mask(s) to {out} with model {model}")
