"""The `wms` command: the root app, global options and the command groups."""

from __future__ import annotations

from pathlib import Path

import typer

from wms.cli import (
    compute,
    compute_maintenance,
    data,
    data_versions,
    demo,
    deploy,
    evaluate,
    forget,
    hooks,
    init,
    labelling,
    model,
    model_prune,
    monitor,
    pipeline,
    pipeline_batches,
    predict,
    serve,
    train,
    vcs,
)
from wms.cli._common import CliState, WmsGroup

app = typer.Typer(
    cls=WmsGroup,
    name="wms",
    help=(
        "WMS: continuous training and delivery of a water-meter counter-window segmenter.\n\n"
        "New labelled pairs go in, a model is trained, compared with production on the same "
        "test images, and promoted only when it is better. Start with `wms demo`.\n\n"
        "Exit codes: 0 done; 1 the command ran and failed (invalid data, training or a backend "
        "failed); 2 what it was told is wrong (a bad option or setting, or a folder, dataset "
        "version, model or run named that does not exist); 130 interrupted."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Settings file (default: the nearest wms.toml here or above)."
    ),
    set_: list[str] = typer.Option(
        [], "--set", "-s", help="Override a setting, e.g. --set train.epochs=3 (repeatable)."
    ),
) -> None:
    """Global options apply to every command."""
    ctx.obj = CliState(config_file=config, sets=list(set_))


app.command("init")(init.init)
for command in (
    data_versions.ingest,
    data_versions.versions,
    data_versions.pull,
    data_versions.diff,
    labelling.suggest,
    labelling.from_labelstudio,
    forget.forget,
):
    data.app.command()(command)
app.add_typer(data.app, name="data")
app.command("train")(train.train)
model.app.command()(model_prune.prune)
app.add_typer(model.app, name="model")
pipeline.app.command()(pipeline_batches.batches)
app.add_typer(pipeline.app, name="pipeline")
compute.app.command()(compute_maintenance.maintenance)
app.add_typer(compute.app, name="compute")
app.command("predict")(predict.predict)
app.command("evaluate")(evaluate.evaluate)
app.command("demo")(demo.demo)
app.command("serve")(serve.serve)
app.add_typer(deploy.app, name="deploy")
app.add_typer(monitor.app, name="monitor")
app.add_typer(hooks.app, name="hooks")
app.add_typer(hooks.runner, name="hook")
app.add_typer(vcs.app, name="vcs")


def run() -> None:
    """Console-script entry point."""
    app()
