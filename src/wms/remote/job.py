"""The training job as it runs on the instance: `python -m wms.remote.job JOB_DIR`.

The local side (`wms.remote.trainer`) writes `JOB_DIR/job.json` and starts this detached from
the SSH session, so a dropped connection does not stop it. It reads the dataset (from the
dataset store when that is on S3, else from the blobs the local side sent), trains with the
settings it was given, logs to the tracking server, and leaves behind:

    JOB_DIR/progress.jsonl   one JSON object per line: epoch_started, step, epoch_done, note
    JOB_DIR/checkpoint.pt    the training state after the last finished epoch (gone once done)
    JOB_DIR/mlflow_run       the MLflow run's id, written as soon as the run exists
    JOB_DIR/train.json       the MLflow run id and the per-image test scores (wms.runs format)
    JOB_DIR/exit.json        {"code": 0} or {"code": N, "error": "..."}, written last

SIGTERM stops it cleanly (the MLflow run is marked failed), so the local side can stop the
job before it stops the instance. Started again in the same folder (its instance was
reclaimed, see wms.remote.reclaim), it goes on from the checkpoint, in the same MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from wms.errors import DataError, WmsError
from wms.files import write_text_atomic

if TYPE_CHECKING:
    from wms.config import Project

JOB_FILE, PROGRESS_FILE, RESULT_FILE, EXIT_FILE, PID_FILE = (
    "job.json",
    "progress.jsonl",
    "train.json",
    "exit.json",
    "pid",
)
CHECKPOINT_FILE, RUN_ID_FILE = "checkpoint.pt", "mlflow_run"


class JsonLinesReporter:
    """A TrainReporter that writes each event as one JSON line, flushed at once."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def emit(self, event: str, **fields: Any) -> None:
        self.out.write(json.dumps({"event": event, **fields}) + "\n")
        self.out.flush()

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        self.emit("epoch_started", epoch=epoch, epochs=epochs, steps=steps)

    def step_done(self, loss: float | None) -> None:
        self.emit("step", loss=None if loss is None else round(float(loss), 5))

    def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None:
        self.emit("epoch_done", epoch=epoch, metrics=metrics)

    def refine_pass_done(self, done: int, metrics: dict[str, float]) -> None:
        self.emit("refine_pass_done", done=done, metrics=metrics)


def materialise(spec: dict[str, Any], out: Path, blobs: Path) -> Path:
    """The job's dataset in `out`: pulled from an S3 store, or copied from the sent blobs."""
    from wms.data.splits import SPLITS_FILE
    from wms.data.store import DatasetStore

    dataset = spec["dataset"]
    if dataset["kind"] == "store":
        DatasetStore(dataset["url"]).pull(dataset["version"], out)
        return out
    shutil.rmtree(out, ignore_errors=True)
    for name, sha in dataset["files"].items():
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts or len(relative.parts) != 2:
            raise DataError(f"job file names an unsafe path {name!r}")
        blob = blobs / sha
        data = blob.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:
            raise DataError(f"blob {sha} on the instance is corrupt; remove {blob} and run again")
        (out / relative.parent).mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(data)
    if dataset.get("splits") is not None:
        (out / SPLITS_FILE).write_text(json.dumps(dataset["splits"]))
    return out


def run_job(job_dir: Path) -> int:
    """Train as `job.json` says; write the result and the exit record. The exit code."""
    from wms.guards import Interrupted, signals_raise

    (job_dir / PID_FILE).write_text(str(os.getpid()))
    code, error = 1, "the job did not finish"
    try:
        with signals_raise():
            _train(job_dir)
        code, error = 0, ""
    except Interrupted as exc:
        code, error = exc.exit_code, str(exc)
    except WmsError as exc:
        code, error = exc.exit_code, str(exc)
    except Exception as exc:  # a bug: keep the traceback in out.log, say what it was in exit.json
        traceback.print_exc()
        code, error = 1, f"{type(exc).__name__}: {exc}"
    finally:
        write_text_atomic(job_dir / EXIT_FILE, json.dumps({"code": code, "error": error}) + "\n")
    return code


def _train(job_dir: Path) -> None:
    import wms
    from wms.config import Project, Settings
    from wms.registry import MlflowRegistry
    from wms.remote.reclaim import resuming_from
    from wms.runs import save_trained
    from wms.sandbox.images import configure, tell_when_unconfined
    from wms.train.checkpoint import epochs_held
    from wms.train.run import train_and_log

    spec = json.loads((job_dir / JOB_FILE).read_text())
    project = Project(root=job_dir, settings=Settings(**spec["settings"]))
    configure(project.settings.data.decode_sandbox)  # the settings' edge here, as CliState's on a runner
    with (job_dir / PROGRESS_FILE).open("a") as out:
        reporter = JsonLinesReporter(out)
        tell_when_unconfined(lambda text: reporter.emit("note", text=f"warning: {text}"))
        reporter.emit("note", text=f"job {spec['job_id']}: wms from {Path(wms.__file__).parent}")
        forget_on_instance(spec, project, reporter)
        dataset = materialise(spec, job_dir / "dataset", Path(spec["blobs_dir"]))
        reporter.emit("note", text=f"dataset {spec['dataset_version']} ready in {dataset}")
        tags = dict(spec["tags"]) | {"wms.code_path": str(Path(wms.__file__).parent)}
        checkpoint, run_file = job_dir / CHECKPOINT_FILE, job_dir / RUN_ID_FILE
        earlier = run_file.read_text().strip() if run_file.is_file() else None
        if earlier:  # where it goes on is read from the checkpoint: the progress file may lag it
            held = epochs_held(checkpoint) if checkpoint.is_file() else 0
            reporter.emit("note", text=f"continuing MLflow run {earlier} {resuming_from(held)}")
        trained = train_and_log(
            project,
            dataset,
            MlflowRegistry(project),
            spec["dataset_version"],
            reporter,
            checkpoint=checkpoint,
            tags=tags,
            continue_run=earlier,
            run_started=lambda run_id: _write(run_file, run_id),
        )
        save_trained(job_dir, trained)
        shutil.rmtree(dataset, ignore_errors=True)  # the blobs stay; the copy is only for this job
        checkpoint.unlink(missing_ok=True)  # the result is logged: the state only served a resume
        reporter.emit(
            "note", text=f"MLflow run {trained.run_id}: test Dice {trained.test_metrics['dice']:.4f}"
        )


def forget_on_instance(spec: dict[str, Any], project: Project, reporter: JsonLinesReporter) -> None:
    """Delete the instance's copies of the photos the store erased: the sent blobs, and the
    training cache's arrays (keyed by no pair: emptied once for each new erasure)."""
    from wms.data.manifest import SHA256
    from wms.train.cache import forget_erased

    erased = [sha for sha in spec.get("erased", []) if SHA256.fullmatch(sha)]  # names, never paths
    gone = 0
    for sha in erased:
        blob = Path(spec["blobs_dir"]) / sha
        if blob.is_file():
            blob.unlink()
            gone += 1
    arrays = forget_erased(project.path(project.settings.train.cache_dir), erased)
    if gone or arrays:
        text = f"erased photos: {gone} sent file(s) and {arrays} cached array(s) deleted on this instance"
        reporter.emit("note", text=text)


def _write(path: Path, text: str) -> None:
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(run_job(Path(sys.argv[1])))
