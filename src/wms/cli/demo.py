"""`wms demo`: the whole loop on synthetic data, on the embedded defaults."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from wms.cli._common import console, progress_bar, state, styled
from wms.config import Project
from wms.data.synth import synthesize


def demo(
    ctx: typer.Context,
    workdir: Path = typer.Option(
        Path(".wms/demo"), "--workdir", help="Where the demo's batches and masks go."
    ),
    count: int = typer.Option(160, "--count", "-n", min=8, help="Pairs in each synthetic batch."),
    size: int = typer.Option(512, "--size", min=32, help="Side of the synthetic photos."),
) -> None:
    """Synthesize a batch → pipeline (first model promoted) → second batch → pipeline (gate) → predict."""
    from wms.cli.pipeline import run_pipeline
    from wms.predict import predict_files
    from wms.registry import MlflowRegistry
    from wms.train.segmenter import Segmenter

    started = time.perf_counter()
    project = state(ctx).project({"data.size": size})
    workdir = project.path(workdir)

    def step(title: str) -> None:
        console.rule(styled(title, "bold"))

    batches = []
    deployed = None  # the pipeline deploys what it promotes when deploy.in_pipeline is on
    for number, seed in ((1, 1), (2, 2)):
        batch = workdir / f"batch{number}"
        step(f"{'1' if number == 1 else '3'}. synthesize batch {number}: {count} pairs at {size}x{size}")
        with progress_bar("synthesizing", count) as advance:
            synthesize(batch, count=count, size=size, seed=seed, progress=advance)
        console.print(f"wrote {batch}/images and {batch}/masks", highlight=False)
        batches.append(batch)
        step(f"{'2' if number == 1 else '4'}. wms pipeline run --new-data {batch}")
        deployed = run_pipeline(project, batch).outputs.get("deployed", deployed)

    step("5. wms predict on new photos with the production model")
    photos = workdir / "new-photos"
    synthesize(photos, count=4, size=size, seed=3)
    registry = MlflowRegistry(project)
    with registry.fetched("production") as folder:
        segmenter = Segmenter.load(folder)
    masks = predict_files(segmenter, sorted((photos / "images").iterdir()), workdir / "predictions")
    console.print(f"wrote {len(masks)} masks to {workdir / 'predictions'}", highlight=False)

    production = registry.production()
    step(f"done in {time.perf_counter() - started:.0f} s")
    lines = [
        f"production model: version {production.version if production else '—'}",
        f"MLflow database:  {registry.uri}",
        f"browse runs:      {registry.where_to_look()}",
        f"pointer files:    {project.path(project.settings.tracking.pointer_dir)}/production_current.json",
        f"masks:            {workdir / 'predictions'}",
        "",
        f"serving:          {_serving(project, deployed)}",
        "",
        "try next:",
        f"  wms deploy status   # what port {project.settings.serve.port} serves against what main names",
        "  wms model list",
        "  wms model history",
        f"  wms predict {photos}/images/*.png --out masks",
        f"  wms data validate {batches[0]} --size {size}",
        "  WMS_TRAIN__EPOCHS=0 wms pipeline run --new-data DIR   # an untrained model: the gate rejects it",
    ]
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


def _serving(project: Project, deployed: str | None) -> str:
    """What serves now: this run's deploy, one an earlier run left running, or why nothing does."""
    if deployed:
        return f"{deployed} (web page at /, stop with `wms deploy stop`)"
    if project.settings.deploy.target == "local":
        from wms.deploy.local import LocalDeployer

        earlier = LocalDeployer(project, print).serving()
        if earlier:
            return f"{earlier}, deployed by an earlier run (web page at /, stop with `wms deploy stop`)"
    if not project.settings.deploy.in_pipeline:
        return "nothing (deploy.in_pipeline is off; `wms deploy` starts it)"
    return "nothing (this run promoted no model; `wms deploy` starts production)"
