"""`wms model`: the registered model versions and their aliases."""

from __future__ import annotations

import json

import typer
from rich import box
from rich.table import Table

from wms.cli._common import WmsGroup, console, state
from wms.registry import MlflowRegistry

app = typer.Typer(cls=WmsGroup, no_args_is_help=True, help="Registered model versions and aliases.")


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show every version with its test metrics and aliases (production, previous)."""
    records = MlflowRegistry(state(ctx).project()).list()
    if as_json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return
    if not records:
        console.print("no model versions yet; run `wms pipeline run --new-data DIR` or `wms demo`")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for column in ("version", "aliases", "test Dice", "IoU", "dataset", "created (UTC)", "run"):
        table.add_column(column, no_wrap=True)
    for r in records:
        table.add_row(
            r.version,
            ", ".join(r.aliases),
            f"{r.metrics.get('test_dice', float('nan')):.4f}",
            f"{r.metrics.get('test_iou', float('nan')):.4f}",
            r.tags.get("dataset_version", "")[:8],
            r.created_at[:16].replace("T", " "),
            r.run_id[:8],
        )
    console.print(table)


@app.command()
def show(
    ctx: typer.Context,
    ref: str = typer.Argument("production", help="An alias (production, previous) or a version number."),
) -> None:
    """Print one version as JSON."""
    print(json.dumps(MlflowRegistry(state(ctx).project()).get(ref).to_dict(), indent=2))
