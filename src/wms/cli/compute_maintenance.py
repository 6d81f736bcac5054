"""`wms compute maintenance`: hold the EC2 instance for a `terraform apply` that stops and starts
it (the logic is wms.compute.maintenance's); a command of the `wms compute` group."""

from __future__ import annotations

import typer

from wms.cli._common import console, state
from wms.cli.compute import default_holder, open_compute


def maintenance(
    ctx: typer.Context,
    minutes: float = typer.Option(
        60, "--minutes", min=1, max=24 * 60, help="How long at the most starts wait (they go on at its end)."
    ),
    end: bool = typer.Option(False, "--end", help="End maintenance now: the starts that wait go on."),
) -> None:
    """Hold the EC2 instance for maintenance: until --end, or --minutes from now, no run starts it.

    Run it before a `terraform apply` that changes the instance (its user data or type), which
    stops and starts it under whatever runs there. A start meanwhile (a pushed batch, the
    sweeper, a deploy) waits without taking a lease, and goes on once maintenance ends: no batch
    is refused. Runs that already hold the instance go on; while they do this exits 1 naming
    them: wait until `wms compute status --idle` passes, apply, then `wms compute maintenance --end`.
    """
    from wms.compute.ec2 import Ec2Compute
    from wms.compute.leases import live_holders, utc_now
    from wms.errors import BackendError, UsageError

    project = state(ctx).project()
    compute = open_compute(project)
    if not isinstance(compute, Ec2Compute):
        raise UsageError(
            'maintenance holds the EC2 instance that Terraform manages; set compute.backend = "ec2"'
        )
    if end:
        instance = compute.end_maintenance()
        console.print(f"instance {instance}: maintenance ended; starts go on", highlight=False)
        return
    ends, held = compute.begin_maintenance(default_holder(), minutes)
    instance, holding, until = held["InstanceId"], live_holders(held, utc_now()), f"{ends:%Y-%m-%d %H:%M} UTC"
    if holding:
        raise BackendError(
            f"instance {instance} is held for maintenance until {until}, and no run starts it now, but "
            f"{', '.join(holding)} still hold it: wait until `wms compute status --idle` passes, then apply"
        )
    console.print(
        f"instance {instance} is held for maintenance until {until}: no run holds it, and none starts it "
        "until then or `wms compute maintenance --end`, whichever comes first; apply now",
        highlight=False,
        soft_wrap=True,
    )
