"""How `wms compute` shows the instance's status: to a person or as JSON, and to GitHub Actions
($GITHUB_OUTPUT, and the seed's summary table with the address, MLflow URL and SSH command)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from wms.cli._common import console, styled
from wms.config import Project

if TYPE_CHECKING:
    from wms.compute import ComputeStatus

# What is shown of a status, in order: (label, key of its values); an empty value is left out.
FIELDS = (
    ("state", "state"),
    ("instance", "instance_id"),
    ("public IP", "public_ip"),
    ("MLflow", "mlflow_url"),
    ("SSH", "ssh_command"),
    ("lease until", "lease_expires"),
    ("held by", "held_by"),
    ("maintenance", "maintenance"),
)


def status_values(project: Project, status: ComputeStatus) -> dict[str, object]:
    """The status with its cost at compute.hourly_price_usd."""
    from wms.compute import cost_usd

    price = project.settings.compute.hourly_price_usd
    return status.to_dict() | {"hourly_price_usd": price, "cost_usd": cost_usd(status.billed_seconds, price)}


def summary_markdown(title: str, values: dict[str, object]) -> str:
    """The step summary: the status as a table, the SSH command as code."""
    rows = [
        (label, f"`{values[key]}`" if key == "ssh_command" and values[key] else values[key])
        for label, key in FIELDS
    ]
    rows.append(("billed this run", _billed(values)))
    lines = [f"### {title}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows if v not in (None, "")]
    return "\n".join(lines) + "\n"


def _billed(values: dict[str, object]) -> str | None:
    seconds = values["billed_seconds"]
    if seconds is None:
        return None
    cost = values["cost_usd"]
    return f"{seconds:.0f} s" + (f" (${cost:.4f})" if values["hourly_price_usd"] else "")


def show(project: Project, status: ComputeStatus, title: str, as_json: bool) -> None:
    """Print one status for a person (or as JSON) and hand it to GitHub Actions."""
    from wms.report import write_github_output, write_step_summary

    values = status_values(project, status)
    # For a person: in the split layout the GPU instance runs no MLflow; say where it is.
    shown = values | {"mlflow_url": values["mlflow_url"] or mlflow_elsewhere(project)}
    if as_json:
        print(json.dumps(values, indent=2))
    else:
        console.print(styled(title, "bold"), highlight=False)
        for label, key in (*FIELDS, ("detail", "detail")):
            if shown[key]:
                console.print(f"  {label:<12} {shown[key]}", highlight=False, soft_wrap=True)
        billed = _billed(values)
        if billed:
            console.print(f"  {'billed':<12} {billed}", highlight=False)
    write_github_output({k: "" if v is None else str(v) for k, v in values.items()})
    write_step_summary(summary_markdown(title, shown))


def mlflow_elsewhere(project: Project) -> str | None:
    """Where MLflow is when not on the instance (compute.mlflow_on_instance = false: split)."""
    cfg = project.settings.compute
    if cfg.backend != "ec2" or cfg.mlflow_on_instance:
        return None
    return "on the serving node, not this instance: `terraform output mlflow_url`"
