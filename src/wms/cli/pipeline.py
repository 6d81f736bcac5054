"""`wms pipeline`: run the whole training-data pipeline on a batch of new pairs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markdown import Markdown

from wms.cli._common import TrainProgress, WmsGroup, console, state
from wms.config import Project

if TYPE_CHECKING:
    from wms.pipeline import PipelineRun, StageRecord

app = typer.Typer(
    cls=WmsGroup,
    no_args_is_help=True,
    help="merge → validate → start compute → train → gate → stop compute → promote.",
)

MARKS = {"ok": "[green]✔[/]", "failed": "[red]✖[/]", "skipped": "[dim]-[/]"}


class StagePrinter:
    """Prints each stage when it ends."""

    def stage_started(self, stage: StageRecord) -> None:
        console.print(f"[bold]▶ {stage.name}[/]")

    def stage_done(self, stage: StageRecord) -> None:
        detail = stage.error if stage.status == "failed" else stage.outcome
        console.print(
            f"{MARKS.get(stage.status, '?')} {stage.name:<13} {stage.seconds:6.1f} s  {detail}",
            highlight=False,
            soft_wrap=True,
        )

    def train_reporter(self) -> TrainProgress:
        return TrainProgress()


def run_pipeline(project: Project, new_data: Path) -> PipelineRun:
    """Run the pipeline with stage printing; shared by `wms pipeline run` and `wms demo`."""
    # Imported here so `wms --help` and the data commands start without loading torch.
    from wms.pipeline import Pipeline
    from wms.registry import MlflowRegistry

    result = Pipeline(project, MlflowRegistry(project), StagePrinter()).run(new_data)
    if report := result.outputs.get("gate_report"):
        console.print(Markdown(Path(report).read_text()))
        console.print(f"[dim]gate report: {Path(report).parent}[/]", highlight=False, soft_wrap=True)
    colour = "green" if result.promoted else "yellow"
    console.print(f"[bold {colour}]{result.summary}[/]", highlight=False, soft_wrap=True)
    console.print(f"[dim]run record: {result.run_dir / 'run.json'}[/]", highlight=False, soft_wrap=True)
    return result


@app.command()
def run(
    ctx: typer.Context,
    new_data: Path | None = typer.Option(
        None, "--new-data", "-d", help="Folder with images/ and masks/ of new pairs (default: data.incoming)."
    ),
) -> None:
    """Merge new pairs, validate, train, gate against production and promote only a better model."""
    project = state(ctx).project()
    run_pipeline(project, new_data or project.path(project.settings.data.incoming))
