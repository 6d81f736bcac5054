"""One tracked training run: dataset folder in, MLflow run with a saved model out."""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from wms.config import Project, TrainSettings
from wms.data.hashes import sha256_file
from wms.data.splits import split_pairs
from wms.errors import ConfigError, DataError
from wms.registry import MODEL_ARTIFACT, Registry, RunLog
from wms.report import overlay_grid, plot_curves
from wms.runs import UNVERSIONED, TrainedRun
from wms.train.distributed import SINGLE, Dist
from wms.train.evaluate import ImageScore, evaluate, summarize
from wms.train.export import export_onnx
from wms.train.loop import check_settings, train
from wms.train.preprocess import image_file
from wms.train.progress import SilentReporter, TrainReporter
from wms.train.segmenter import ONNX_FILE
from wms.train.spec import REFINE_WEIGHTS_FILE
from wms.vcs.git import head_commit
from wms.worst import save_worst

WORST_LOGGED = 16  # test photos with the lowest Dice drawn into each run's `worst/` artifacts


def write_scores(path: Path, scores: Sequence[ImageScore]) -> None:
    """Per-image scores as CSV (the gate and reviewers read it)."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "dice", "iou"])
        writer.writerows([s.id, f"{s.dice:.6f}", f"{s.iou:.6f}"] for s in scores)


class _TrackedReporter:
    """Logs each epoch's metrics to the run and passes progress on to the user's reporter."""

    def __init__(self, run: RunLog, inner: TrainReporter | None) -> None:
        self.run, self.inner = run, inner or SilentReporter()

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        self.inner.epoch_started(epoch, epochs, steps)

    def step_done(self, loss: float | None) -> None:
        self.inner.step_done(loss)

    def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None:
        self.run.log_metrics(metrics, step=epoch)
        self.inner.epoch_done(epoch, metrics)

    def refine_pass_done(self, done: int, metrics: dict[str, float]) -> None:
        self.run.log_metrics({"refine_loss": metrics["refine_loss"]}, step=done)
        self.inner.refine_pass_done(done, metrics)


def check_train_settings(cfg: TrainSettings, dist: Dist = SINGLE) -> None:
    """ConfigError when the [train] settings cannot train here: a model that cannot be built, or
    several devices where one process trains (the pipeline, the remote job). The pipeline asks
    before it records a run or starts compute, not at its train stage."""
    if not dist.active and cfg.devices not in (1, "auto"):
        raise ConfigError(
            f"train.devices={cfg.devices} runs under torchrun, which `wms train` starts; the pipeline "
            "and the remote job train in one process: set train.devices = 1 (or auto) there"
        )
    check_settings(cfg)


def train_and_log(
    project: Project,
    dataset: Path,
    registry: Registry,
    dataset_version: str = UNVERSIONED,
    reporter: TrainReporter | None = None,
    checkpoint: Path | None = None,
    tags: dict[str, str] | None = None,
    dist: Dist = SINGLE,
    continue_run: str | None = None,
    run_started: Callable[[str], None] | None = None,
) -> TrainedRun:
    """Train on the dataset's train split, log everything to a tracking run, score the test split.

    `tags` are added to the run's (a remote job names its host, commit and wheel this way).
    Under DDP this is rank 0's part (`dist`); the other processes run `train_shard`.
    `run_started` receives the tracking run's id as soon as it exists, and `continue_run` goes
    on with such a run: a job resumed from its `checkpoint` keeps its epochs in one run.
    """
    cfg = project.settings.train
    check_train_settings(cfg, dist)  # a model that cannot be built leaves no FAILED run behind
    splits = split_pairs(project, dataset)
    if not splits["test"]:
        raise DataError(
            f"the test split of {dataset} is empty ({sum(map(len, splits.values()))} pairs); add more"
        )
    # The train and val splits are decoded before the first epoch; the test split only after the
    # last one, so a photo there that cannot be read is found now, not after hours of training.
    for pair in splits["test"]:
        for path in (pair.image, pair.mask):
            with image_file(path) as img:
                img.load()
    run_tags = {"wms.dataset_version": dataset_version, "wms.git_commit": head_commit(project.root)}
    with registry.start_run(f"train-{dataset_version}", run_tags | (tags or {}), continue_run) as run:
        if run_started is not None:
            run_started(run.run_id)
        run.log_params({f"train.{k}": v for k, v in cfg.model_dump().items()})
        run.log_params(
            {f"split.{k}": len(v) for k, v in splits.items()} | {"dataset_version": dataset_version}
        )

        result = train(
            cfg,
            splits["train"],
            splits["val"],
            _TrackedReporter(run, reporter),
            cache_dir=project.path(cfg.cache_dir),
            checkpoint=checkpoint,
            dist=dist,
        )
        scores = evaluate(result.segmenter, splits["test"])
        metrics = summarize(scores)
        run.log_metrics(
            {
                "test_dice": metrics["dice"],
                "test_iou": metrics["iou"],
                "best_val_dice": result.best_val_dice,
                "best_epoch": result.best_epoch,
            }
            | result.refine  # the second stage's passes and minutes, where there is one
        )
        with tempfile.TemporaryDirectory(prefix="wms-run-") as tmp:
            model_dir = Path(tmp) / MODEL_ARTIFACT
            sha = result.segmenter.save(model_dir)
            hashes = {"wms.model_sha256": sha}
            if (model_dir / REFINE_WEIGHTS_FILE).exists():  # a second stage: checked as model.pt is
                hashes["wms.refine_sha256"] = sha256_file(model_dir / REFINE_WEIGHTS_FILE)
            if cfg.export_onnx:
                export_onnx(result.segmenter, model_dir / ONNX_FILE)
                # Serving runs the ONNX file and checks it against this hash at load.
                hashes["wms.onnx_sha256"] = sha256_file(model_dir / ONNX_FILE)
            run.log_model(model_dir)
            run.set_tags(
                hashes
                | {
                    "wms.device": result.device,
                    "wms.precision": result.precision,
                    "wms.dataset_memory": result.dataset_memory,
                    "wms.parameters": str(result.parameters),
                }
            )
            scores_dir = Path(tmp) / "scores"
            scores_dir.mkdir()
            write_scores(scores_dir / "test_scores.csv", scores)
            run.log_artifacts(scores_dir, "evaluation")
            plots = Path(tmp) / "plots"
            plots.mkdir()
            if result.history:
                plot_curves(result.history, plots / "training_curves.png")
            overlay_grid(result.segmenter, splits["val"][:8], plots / "val_predictions.jpg")
            run.log_artifacts(plots, "plots")
            worst = Path(tmp) / "worst"
            title = f"run {run.run_id}: worst of the test split of dataset {dataset_version}"
            save_worst(worst, result.segmenter, scores, splits["test"], WORST_LOGGED, title)
            run.log_artifacts(worst, "worst")
        return TrainedRun(run.run_id, scores, metrics, sha, result.best_epoch)


def train_shard(project: Project, dataset: Path, dist: Dist, checkpoint: Path | None = None) -> None:
    """A DDP worker other than rank 0: trains its shard of every epoch; logs and writes nothing."""
    cfg = project.settings.train
    splits = split_pairs(project, dataset)
    train(
        cfg,
        splits["train"],
        splits["val"],
        cache_dir=project.path(cfg.cache_dir),
        checkpoint=checkpoint,
        dist=dist,
    )
