"""`wms compute`: start, stop and watch the training machine, and the lease reaper.

    wms compute start            # take a lease, start it, wait for status checks and the probe
    wms compute status --json
    wms compute status --idle    # exit 1 while a run holds it: check before a `terraform apply`
    wms compute maintenance      # no run starts it until --end (wms.cli.compute_maintenance)
    wms compute stop             # drop the lease; stop it unless another holder still leases it
    wms compute reap             # stop every WMS-started instance whose leases all ran out (cron)
    wms compute exec -- CMD...   # run a command on the instance (started if needed), stream its output
    wms compute ssh [--mlflow]   # open an SSH session on it (--print: only print the command)

Each lease has a holder: `--holder NAME`, by default `gh-run-<GITHUB_RUN_ID>` inside GitHub
Actions and `user@host` elsewhere, so the start and the stop of one run match.

Inside GitHub Actions each command also writes its values to $GITHUB_OUTPUT and a table
to $GITHUB_STEP_SUMMARY.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

import typer

from wms.cli._common import WmsGroup, console, err_console, on_interrupt, state, styled
from wms.cli.compute_show import show
from wms.config import Project

if TYPE_CHECKING:
    from wms.compute import Compute, ComputeStatus
    from wms.remote.ssh import SshTarget

app = typer.Typer(
    cls=WmsGroup,
    no_args_is_help=True,
    help=(
        "Start, stop and watch the machine that trains (compute.backend: local or ec2). "
        "A started EC2 instance carries a lease; `wms compute reap` stops it once the lease runs out."
    ),
)

JSON_OPTION = typer.Option(False, "--json", help="Print the status as JSON on stdout.")
LEASE_OPTION = typer.Option(
    None, "--lease-minutes", min=1, help="Lease length (default: compute.lease_minutes)."
)


HOLDER_OPTION = typer.Option(
    None,
    "--holder",
    help="Whose lease this is (default: gh-run-<GITHUB_RUN_ID> in GitHub Actions, else user@host).",
)


def default_holder() -> str:
    """The lease holder of this process: the GitHub Actions run, or the person at this machine."""
    from wms.compute.base import run_holder

    run_id = os.environ.get("GITHUB_RUN_ID")
    if run_id:
        return run_holder(run_id)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        user = "user"
    return f"{user}@{socket.gethostname()}"


def note(line: str) -> None:
    """Progress lines of long waits, on stderr so --json output stays clean."""
    err_console.print(styled(line, "dim"), highlight=False, soft_wrap=True)


def job_lease(project: Project) -> AbstractContextManager[None]:
    """A workflow job on the instance (compute.train_on = "here": `wms pipeline run`, `wms deploy`,
    `wms model reconcile`) holds its run's lease while it runs (wms.compute.hold.keep_job_lease),
    so the reaper and the lease guard leave the instance alone under a job longer than the lease
    its start job took; elsewhere nothing."""
    cfg = project.settings.compute
    if not cfg.runs_on_instance:
        return nullcontext()
    from wms.compute import make_compute
    from wms.compute.hold import keep_job_lease

    return keep_job_lease(make_compute(cfg, notify=note, holder=default_holder()), cfg, note)


def open_compute(project: Project, holder: str | None = None) -> Compute:
    """The configured backend, acting for `holder` (default: `default_holder()`).

    GitHub answers the runner probe when `ready_probe = "runner"`; it is asked for (and needs
    a token) only where a start waits for readiness, and by a stop only with compute.runner_label
    (which jobs wait for the runner), so status and reap work without one.
    """
    from wms.compute import make_compute
    from wms.vcs import runner_probe_for, runner_queue_for

    return make_compute(
        project.settings.compute,
        runner_probe=lambda: runner_probe_for(project),
        notify=note,
        holder=holder or default_holder(),
        runner_queue=lambda: runner_queue_for(project),
    )


@app.command()
def start(
    ctx: typer.Context,
    lease_minutes: float | None = LEASE_OPTION,
    holder: str | None = HOLDER_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Take a lease, start the machine (a running one is left as it is), wait for checks and the probe.

    The instance is tagged with this holder's lease, which `wms compute reap` enforces: stop
    it with `wms compute stop` (same holder), or it is stopped when every lease ran out.
    """
    project = state(ctx).project({"compute.lease_minutes": lease_minutes})
    compute = open_compute(project, holder)
    if compute.name != "local":
        who = holder or default_holder()
        leased = (
            f"stopped waiting; the instance may go on starting, leased to {who} for "
            f"{project.settings.compute.lease_minutes:g} min: stop it with `wms compute stop"
            f"{' --holder ' + who if holder else ''}` (else `wms compute reap` stops it when the lease ends)"
        )

        def note() -> str:
            if compute.waiting_out is None:
                return leased
            by, until = compute.waiting_out
            return (
                f"stopped waiting for the maintenance by {by} to end ({until:%H:%M} UTC); "
                "this start took no lease and left the instance as it was"
            )

        on_interrupt(ctx, note)
    compute.start()
    show(project, compute.wait_ready(), f"compute started ({compute.name})", as_json)


@app.command()
def stop(ctx: typer.Context, holder: str | None = HOLDER_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Drop this holder's lease; stop the machine and wait, unless another holder still leases it.

    With --holder, the leases of that holder's own sub-holders go too: `--holder gh-run-7`
    also drops `gh-run-7-pipeline`, the lease of the pipeline that run started (a cancelled
    run's pipeline never released it; the workflows' stop job names its run). Without it, a
    pipeline of yours still running keeps the machine. A machine another run still holds is
    left running ("kept running: held by ...").
    """
    project = state(ctx).project()
    compute = open_compute(project, holder)
    if compute.name != "local":
        on_interrupt(
            ctx,
            "stopped waiting; the instance may still be running or stopping: see `wms compute status`, "
            "and run `wms compute stop` again if it runs",
        )
    stopped = compute.stop(sub_leases=holder is not None)
    title = "stopped" if stopped.state in ("stopped", "terminated") else "kept running"
    show(project, stopped, f"compute {title} ({compute.name})", as_json)


@app.command()
def status(
    ctx: typer.Context,
    as_json: bool = JSON_OPTION,
    idle: bool = typer.Option(
        False,
        "--idle",
        help="Exit 1 while a run holds the machine (a live lease): run it right before a "
        "`terraform apply` that changes the instance's user data, which stops and starts it.",
    ),
) -> None:
    """Show the machine's state, address, MLflow URL, SSH command, lease, holders and cost so far."""
    from wms.errors import BackendError, UsageError

    project = state(ctx).project()
    if idle and project.settings.compute.backend != "ec2":  # an all-clear for this machine would mislead
        raise UsageError('--idle checks the EC2 instance that Terraform manages; set compute.backend = "ec2"')
    compute = open_compute(project)
    current = compute.status()
    show(project, current, f"compute status ({compute.name})", as_json)
    if not idle:
        return
    if current.held_by:
        raise BackendError(
            f"instance {current.instance_id} is held by {current.held_by} (lease until "
            f"{current.lease_expires}): a `terraform apply` that changes its user data would stop it "
            "under that run; wait until `wms compute status --idle` passes, then apply"
        )
    note(f"no run holds instance {current.instance_id} ({current.state}): an apply may stop and start it now")


@app.command()
def renew(
    ctx: typer.Context,
    lease_minutes: float | None = LEASE_OPTION,
    holder: str | None = HOLDER_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Extend this holder's lease on the running machine by compute.lease_minutes from now (exit 1,
    no lease, where it is not running: a job waiting for its runner would wait for none)."""
    from wms.errors import BackendError

    project = state(ctx).project({"compute.lease_minutes": lease_minutes})
    compute = open_compute(project, holder)
    if (current := compute.status()).state not in ("running", "pending"):
        why = f"{current.instance_id or compute.name} is {current.state}: a lease would keep nothing running"
        raise BackendError(f"{why}, so none was taken; start it with `wms compute start`")
    compute.renew_lease()
    show(project, compute.status(), f"compute lease renewed ({compute.name})", as_json)


@app.command()
def reap(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Stop every WMS-started instance whose lease ran out (run it on a schedule, e.g. every 15 min)."""
    from wms.report import write_github_output, write_step_summary

    project = state(ctx).project()
    results = open_compute(project).reap()
    stopped = [r for r in results if r.state == "stopped"]
    if as_json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    elif not results:
        console.print("no running instance started by WMS")
    for r in [] if as_json else results:
        mark = styled("stopped", "red") if r.state == "stopped" else styled("kept", "green")
        console.print(mark, f"{r.instance_id}: {r.detail}", highlight=False, soft_wrap=True)
    write_github_output({"stopped": ",".join(r.instance_id or "" for r in stopped)})
    if stopped:
        lines = ["### lease reaper stopped instances", ""]
        lines += [f"- {r.instance_id}: {r.detail}" for r in stopped]
        write_step_summary("\n".join(lines))


def _ssh_target(project: Project, compute: Compute, started: ComputeStatus | None = None) -> SshTarget:
    from wms.errors import UsageError
    from wms.remote.entry import target_for

    current = started or compute.status()
    host = current.host
    if current.state != "running" or not host:
        raise UsageError(
            f"the instance is {current.state}{'' if host else ' and has no address'}; "
            "start it with `wms compute start` (or let `wms compute exec` start it)"
        )
    return target_for(project, host).for_instance(current.instance_id)


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_(
    ctx: typer.Context,
    holder: str | None = HOLDER_OPTION,
    stop_after: bool = typer.Option(
        False, "--stop", help="Drop this holder's lease after the command (stop the machine unless held)."
    ),
) -> None:
    """Run a command on the instance and stream its output: `wms compute exec -- nvidia-smi`.

    Starts the machine first if it is stopped (with this holder's lease, which the reaper
    enforces; add --stop to give it back after). The exit status is the command's.
    """
    import sys

    from wms.errors import UsageError
    from wms.remote.ssh import quote, session

    words = list(ctx.args)
    if not words:
        raise UsageError("name the command to run after --, e.g. wms compute exec -- nvidia-smi")
    project = state(ctx).project()
    compute = open_compute(project, holder)
    if project.settings.compute.backend != "ec2":
        raise UsageError('`wms compute exec` runs on the EC2 instance; set compute.backend = "ec2"')
    try:  # a start or wait that fails (or Ctrl-C) gives the machine back as well
        compute.start()
        target = _ssh_target(project, compute, compute.wait_ready())
        with session(target) as ssh:

            def show(chunk: bytes) -> None:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()

            code = ssh.stream(quote(*words) if len(words) > 1 else words[0], show)
    finally:
        if stop_after:
            note(f"compute: {compute.stop().state}")
    raise typer.Exit(code)


@app.command()
def ssh(
    ctx: typer.Context,
    print_only: bool = typer.Option(False, "--print", help="Only print the command."),
    mlflow: bool = typer.Option(
        False,
        "--mlflow",
        help="Also forward the instance's MLflow (compute.mlflow_port) to this machine (single layout).",
    ),
) -> None:
    """Open an SSH session on the running instance (or print the command with --print).

    The host key is checked against compute.ssh_known_hosts (default .wms/known_hosts), the
    file WMS pins it in on first use, under the instance id (OpenSSH's HostKeyAlias). With
    --mlflow, http://127.0.0.1:PORT here is the instance's MLflow UI while the session is open.
    """
    import shlex

    from wms.errors import UsageError

    project = state(ctx).project()
    cfg = project.settings.compute
    if cfg.backend != "ec2":  # "start it with `wms compute start`" would not help: this machine trains
        raise UsageError('`wms compute ssh` opens a session on the EC2 instance; set compute.backend = "ec2"')
    if mlflow and not cfg.mlflow_on_instance:  # split: the instance's port would forward nothing
        raise UsageError(
            "--mlflow forwards the GPU instance's MLflow, but compute.mlflow_on_instance = false: MLflow "
            "runs on the serving node; open `terraform output mlflow_url` instead, or drop --mlflow"
        )
    target = _ssh_target(project, open_compute(project))
    known = (
        f"-o UserKnownHostsFile={shlex.quote(str(target.known_hosts))} -o StrictHostKeyChecking=accept-new "
    )
    if target.host_key_alias:  # the key pinned for the instance, at whatever address it has now
        known += f"-o HostKeyAlias={shlex.quote(target.host_key_alias)} "
    forward = f"-L {cfg.mlflow_port}:127.0.0.1:{cfg.mlflow_port} " if mlflow else ""
    command = target.command(known + forward)
    if print_only or target.key.lstrip().startswith("-----BEGIN"):
        if not print_only:
            note("compute.ssh_key holds the key itself: save it to a file (chmod 600) and use -i FILE")
        print(command)
        return
    os.execvp("ssh", shlex.split(command))
