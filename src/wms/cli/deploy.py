"""`wms deploy`: put a registered model in front of users, checking its answers before switching."""

from __future__ import annotations

import typer

from wms.cli._common import WmsGroup, console, on_interrupt, state

app = typer.Typer(
    cls=WmsGroup,
    invoke_without_command=True,
    help=(
        "Deploy a model version to deploy.target (local | k8s). The new version must answer /ready "
        "and give the expected mask for a reference photo before it takes traffic; a failed check "
        "leaves the running version serving. On k8s clients use one address that each deploy moves "
        "to the version it checked: svc/wms-model in namespace wms (deploy.entry_namespace)."
    ),
)


def _echo(line: str) -> None:
    console.print(line, highlight=False, soft_wrap=True)


@app.callback()
def deploy(
    ctx: typer.Context,
    model: str = typer.Option(
        "production", "--model", "-m", help="Registry alias or version to deploy (default: production)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the model and print the steps, running none of them."
    ),
) -> None:
    """Deploy MODEL: local starts it beside the old one and switches serve.port; k8s runs the seed's
    steps and switches the production address (svc/wms-model in namespace deploy.entry_namespace)."""
    if ctx.invoked_subcommand is not None:
        return
    from wms.deploy import make_deployer
    from wms.report import write_github_output, write_step_summary

    project = state(ctx).project()
    deployer = make_deployer(project, _echo)
    if dry_run:
        steps = deployer.plan(model)  # reads the registry: a version that is not there stops here
        _echo(f"plan for deploying {model} to {deployer.name} (dry run, nothing is changed):")
        for number, step in enumerate(steps, 1):
            _echo(f"  {number}. {step}")
        return
    on_interrupt(
        ctx,
        "deploy stopped before the switch: what served before (if anything) still serves and the new server "
        "was stopped; run `wms deploy` again, or `wms deploy stop` to stop it all"
        if deployer.name == "local"
        else "deploy stopped: older namespaces were left alone, and a release left pending is set right by "
        "the next deploy; run `wms deploy` again",
    )
    from wms.cli.compute import job_lease

    with job_lease(project):  # single: the image build and the rollout outlive the start's lease
        result = deployer.deploy(model)
    _echo(result.summary)
    write_github_output({"model_version": result.version, "url": result.url, **result.details})
    write_step_summary(
        f"### Deploy\n\n{result.summary}\n\n" + "\n".join(f"1. {step}" for step in result.steps) + "\n"
    )


@app.command()
def status(
    ctx: typer.Context,
    check: bool = typer.Option(
        False, "--check", help="Exit 1 when deploy.target does not serve what main names (as `diff` does)."
    ),
) -> None:
    """What deploy.target serves against what main's models/production_current.json names. On k8s:
    the version its namespace's Service answers /ready with, whether its image is built from main's
    code, the version the production address answers with and what its proxy answered itself, and
    any namespace deployed while main named another version. On local: the version the stable port
    (serve.port) answers /ready with, and what its proxy answered itself.
    Changes nothing. In GitHub Actions also the outputs `in_sync`, `wanted`, `served` and the step
    summary."""
    from wms.deploy.status import serving_status
    from wms.report import write_github_output, write_step_summary

    found = serving_status(state(ctx).project())
    lines = found.lines()
    for line in lines:
        _echo(line)
    write_github_output(
        {"in_sync": str(found.in_sync).lower(), "wanted": found.wanted or "", "served": found.served or ""}
    )
    write_step_summary("### Production against main\n\n" + "\n".join(f"- {line}" for line in lines) + "\n")
    if check and not found.in_sync:
        raise typer.Exit(1)


@app.command()
def stop(ctx: typer.Context) -> None:
    """Stop what the local deploy runs (server and proxy); for k8s, prints how to uninstall."""
    from wms.deploy import make_deployer

    _echo(make_deployer(state(ctx).project(), _echo).stop())
