"""`wms pipeline`: run the whole training-data pipeline on a batch of new pairs, or resume one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markdown import Markdown

from wms.cli._common import TrainProgress, WmsGroup, console, err_console, state
from wms.config import Project

if TYPE_CHECKING:
    from wms.pipeline import PipelineRun, StageRecord

app = typer.Typer(
    cls=WmsGroup,
    no_args_is_help=True,
    help=(
        "merge → validate → start compute → train → gate → stop compute → promote → publish → deploy. "
        "Compute is stopped on every way out; a failed run continues with `wms pipeline resume`."
    ),
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


def run_pipeline(project: Project, new_data: Path | None = None, resume: str | None = None) -> PipelineRun:
    """Run (or resume) the pipeline with stage printing; shared by `wms pipeline` and `wms demo`."""
    # Imported here so `wms --help` and the data commands start without loading torch.
    from wms.cli.compute import note
    from wms.guards import Interrupted
    from wms.pipeline import Pipeline
    from wms.registry import MlflowRegistry

    # Tests inject faults this way; the value is read here, at the entry point, like the settings.
    fault = os.environ.get("WMS_FAULT_STAGE")
    pipeline = Pipeline(project, MlflowRegistry(project), StagePrinter(), notify=note, fault=fault)
    try:
        result = pipeline.resume(resume) if resume else pipeline.run(new_data or Path())
    except Interrupted as exc:
        err_console.print(
            f"[bold red]error:[/] {exc}; compute was released — continue with `wms pipeline resume RUN_ID` "
            f"(the run id is in {project.runs_dir})",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(exc.exit_code) from None
    finally:
        if pipeline.last_run is not None and pipeline.last_run.run_dir.exists():
            report_to_github(pipeline.last_run)
    if report := result.outputs.get("gate_report"):
        console.print(Markdown(Path(report).read_text()))
        console.print(f"[dim]gate report: {Path(report).parent}[/]", highlight=False, soft_wrap=True)
    colour = "green" if result.promoted else "yellow"
    console.print(f"[bold {colour}]{result.summary}[/]", highlight=False, soft_wrap=True)
    usage = result.outputs.get("compute")
    if usage and usage.get("backend"):
        cost = (
            f", ${usage['cost_usd']:.4f} at ${usage['hourly_price_usd']}/h" if usage.get("cost_usd") else ""
        )
        where = f" {usage['instance_id']}" if usage.get("instance_id") else ""
        console.print(
            f"compute: {usage['backend']}{where} held {usage['instance_seconds']:.0f} s{cost}",
            highlight=False,
        )
    console.print(f"[dim]run record: {result.run_dir / 'run.json'}[/]", highlight=False, soft_wrap=True)
    return result


def report_to_github(run: PipelineRun) -> None:
    """Run id, outcome and compute cost as step outputs, and the stage table on the Summary page."""
    from wms.report import write_github_output, write_step_summary

    usage = run.outputs.get("compute", {})
    write_github_output(
        {
            "run_id": run.run_id,
            "status": run.status,
            "failed_stage": run.failed_stage or "",
            "promoted": str(run.promoted).lower(),
            "dataset_version": str(run.outputs.get("dataset_version") or ""),
            "model_version": str(run.outputs.get("model_version") or ""),
            "summary": run.summary,
            "instance_seconds": str(usage.get("instance_seconds", 0)),
            "cost_usd": str(usage.get("cost_usd") or 0),
        }
    )
    rows = ["| stage | status | seconds | outcome |", "|---|---|---|---|"]
    for stage in run.stages.values():
        detail = (stage.error if stage.status == "failed" else stage.outcome) or ""
        rows.append(f"| {stage.name} | {stage.status} | {stage.seconds:.1f} | {detail.replace('|', '/')} |")
    cost = f"compute held {usage.get('instance_seconds', 0):.0f} s" + (
        f", ${usage['cost_usd']:.4f}" if usage.get("cost_usd") else ""
    )
    gate = run.outputs.get("gate_report")
    gate_md = ["", "#### Quality gate", "", Path(gate).read_text()] if gate and Path(gate).exists() else []
    write_step_summary(
        "\n".join([f"### pipeline run {run.run_id}", "", run.summary, "", *rows, "", cost, *gate_md])
    )


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


@app.command()
def resume(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="The run to continue: a folder name in .wms/runs/."),
) -> None:
    """Continue a failed or interrupted run from its first unfinished stage.

    Finished stages are not done again: the merged dataset version, the trained model (in
    MLflow) and the gate decision are read from the run record.
    """
    run_pipeline(state(ctx).project(), resume=run_id)
