"""`wms train`: one tracked training run on a dataset folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from wms.cli._common import TrainProgress, console, dataset_folder, on_interrupt, state
from wms.errors import UsageError


def train(
    ctx: typer.Context,
    dataset: Path = typer.Argument(..., help="Dataset folder holding images/ and masks/."),
    epochs: int | None = typer.Option(None, "--epochs", help="Override train.epochs."),
    image_size: int | None = typer.Option(None, "--image-size", help="Override train.image_size."),
    seed: int | None = typer.Option(None, "--seed", help="Override train.seed."),
    recipe: str | None = typer.Option(
        None, "--recipe", help="Override train.recipe: a named set of [train] values, cpu or gpu."
    ),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        help="Save the training state here every epoch; continue from it if it exists. A second "
        "stage (train.refine_epochs) keeps its own beside it: job-second.pt for job.pt.",
    ),
) -> None:
    """Train a U-Net on the train split, keep the best val epoch, score the test split; log to MLflow.

    With compute.backend = "ec2" (and compute.train_on = "instance") the model trains on the
    instance over SSH: it is started, the job runs there, and it is stopped after, always.
    With train.devices > 1 (or auto on a machine with several GPUs) it starts itself again
    under torchrun, one process per device (DDP); only rank 0 logs to MLflow.
    """
    from wms.registry import MlflowRegistry
    from wms.train.distributed import devices_wanted, from_env, run_under_torchrun
    from wms.train.loop import resolve_device
    from wms.train.run import train_and_log, train_shard

    # The recipe is a flag like the others, so the flags named beside it still win over it.
    flags = {
        "train.recipe": recipe,
        "train.epochs": epochs,
        "train.image_size": image_size,
        "train.seed": seed,
    }
    if checkpoint is not None and checkpoint.is_dir():  # found before training, not after its first epoch
        raise UsageError(
            f"--checkpoint {checkpoint} is a folder; name a file, e.g. {checkpoint / 'train.pt'}"
        )
    dataset_folder(dataset)
    project = state(ctx).project(flags)
    compute = project.settings.compute
    dist = from_env(os.environ)  # set by torchrun in each of its processes
    if not compute.trains_remotely:
        wanted = devices_wanted(
            project.settings.train.devices,
            resolve_device(project.settings.train.device, project.settings.train.recipe),
        )
        if wanted > 1 and not dist.active:
            console.print(f"training in {wanted} processes under torchrun (DDP)", highlight=False)
            raise typer.Exit(run_under_torchrun(wanted, sys.argv[1:]))
        if not dist.is_main:
            train_shard(project, dataset, dist, checkpoint)
            return
    registry = MlflowRegistry(project)
    if compute.trains_remotely:
        from wms.cli.compute import note, open_compute
        from wms.remote.entry import train_folder_on_instance

        if checkpoint is not None:
            raise UsageError("--checkpoint is for training here; on the instance a job keeps its own state")
        on_interrupt(
            ctx,
            "training stopped; the job on the instance and the instance were stopped and nothing was "
            "registered; run `wms train` again to train from the start",
        )
        trained = train_folder_on_instance(project, open_compute(project), dataset, TrainProgress(), note)
    else:
        resume = (
            f"run the same command again: it goes on from the last epoch saved in {checkpoint}"
            if checkpoint is not None
            else "run `wms train` again (with --checkpoint FILE a stopped run goes on from its last epoch)"
        )
        on_interrupt(
            ctx, f"training stopped; its MLflow run is marked FAILED and no model was registered; {resume}"
        )
        reporter = TrainProgress()
        try:
            trained = train_and_log(
                project, dataset, registry, reporter=reporter, checkpoint=checkpoint, dist=dist
            )
        finally:
            reporter.close()  # a bar cut short by Ctrl-C would leave the terminal's cursor hidden
    m = trained.test_metrics
    console.print(f"run id: {trained.run_id}")
    console.print(f"test Dice {m['dice']:.4f}  IoU {m['iou']:.4f}  on {m['n']} images", highlight=False)
    where = registry.where_to_look(trained.run_id)
    console.print(
        f"see it {'at' if where.startswith('http') else 'with:'} {where}", highlight=False, soft_wrap=True
    )
