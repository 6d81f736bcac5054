"""Training runs whose process was killed: marked KILLED with the reason, not RUNNING for good."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from wms.config import load_settings
from wms.registry import MlflowRegistry
from wms.registry_api import CONTINUED_TAG, KILLED_TAG
from wms.registry_stale import end_stale_runs

HOUR_MS = 3_600_000

# The training run of a process that dies outright: SIGKILL, as a cancelled job's runner, the
# kernel's OOM killer or an instance stopped under its job end it. Nothing in it runs after.
KILLED_TRAINING = textwrap.dedent(
    """
    import os, signal
    from wms.config import load_settings
    from wms.registry import MlflowRegistry

    with MlflowRegistry(load_settings()).start_run("train-v1", {"wms.dataset_version": "v1"}) as run:
        run.log_metrics({"train_loss": 0.5, "val_dice": 0.4}, step=1)
        print(run.run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.fixture
def registry(project_dir: Path, tracking: str) -> MlflowRegistry:
    return MlflowRegistry(load_settings(start=project_dir))


both = pytest.mark.parametrize("tracking", ["sqlite", "server"], indirect=True)


def killed_training(project_dir: Path) -> str:
    """The MLflow run of a training process killed after its first epoch."""
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", KILLED_TRAINING], cwd=project_dir, env=env, capture_output=True, text=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    return done.stdout.strip()


def left_running(registry: MlflowRegistry, hours_ago: float) -> str:
    """A run whose process died `hours_ago` hours ago, after an epoch: RUNNING, as MLflow keeps it."""
    client = registry._client
    then = int(time.time() * 1000 - hours_ago * HOUR_MS)
    run = client.create_run(registry._experiment_id(), start_time=then - HOUR_MS, run_name="train-v2")
    client.log_metric(run.info.run_id, "train_loss", 0.3, timestamp=then, step=1)
    return str(run.info.run_id)


@both
def test_the_daily_prune_marks_a_killed_training_killed_and_leaves_a_live_one_alone(
    cli: Callable[..., Any], registry: MlflowRegistry, project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A live run holds the instance for 12 h at most, and the reaper stops it a lease later: a
    # run silent for longer is dead. Here that is 3 s, so the test need not wait 13 hours.
    monkeypatch.setenv("WMS_COMPUTE__MAX_HOLD_HOURS", str(2.94 / 3600))
    monkeypatch.setenv("WMS_COMPUTE__LEASE_MINUTES", str(0.06 / 60))
    with registry.start_run("train-v3", {}) as live:
        killed = killed_training(project_dir)
        assert registry._client.get_run(killed).info.status == "RUNNING"  # for good, before the fix
        last = max(m.timestamp for m in registry._client.get_metric_history(killed, "train_loss"))
        time.sleep(max(0.0, last / 1000 + 3.1 - time.time()))  # the killed run is silent past the limit
        # The live one logged just now, before the prune begins: on a busy machine the thread
        # below may first write only after the prune has looked at it.
        live.log_metrics({"train_loss": 0.2}, step=6)
        # The live one, started as long ago, logs as a training does, every few steps, for as
        # long as the prune looks (on a busy machine the prune may take longer than the limit).
        stop = threading.Event()

        def train() -> None:
            for step in itertools.count(7):
                live.log_metrics({"train_loss": 0.2}, step=step)
                if stop.wait(0.2):
                    return

        heart = threading.Thread(target=train)
        heart.start()
        try:
            pruned = cli("model", "prune", "--older-than", "30")
        finally:
            stop.set()
            heart.join()
        assert pruned.exit_code == 0, pruned.output
        lines = pruned.output.splitlines()
        assert lines[0].startswith(f"run {killed[:8]} (train-v1, started ")
        assert ": marked KILLED, nothing logged since " in lines[0]
        assert len(lines) == 2  # the live run is not named
        run = registry._client.get_run(killed)
        assert run.info.status == "KILLED"
        assert run.info.end_time == last  # its duration ends where it last showed life
        assert "marked KILLED by `wms model prune`: nothing logged since " in run.data.tags[KILLED_TAG]
        assert registry._client.get_run(live.run_id).info.status == "RUNNING"
    assert registry._client.get_run(live.run_id).info.status == "FINISHED"


def test_a_dry_run_only_names_the_run(cli: Callable[..., Any], registry: MlflowRegistry) -> None:
    dead = left_running(registry, hours_ago=14)
    looked = cli("model", "prune", "--dry-run")
    assert looked.exit_code == 0, looked.output
    assert looked.output.startswith(f"run {dead[:8]} (train-v2, started ")
    assert ": would mark KILLED, nothing logged since " in looked.output
    assert registry._client.get_run(dead).info.status == "RUNNING"
    assert KILLED_TAG not in registry._client.get_run(dead).data.tags


def test_a_run_silent_for_less_than_a_hold_and_a_lease_is_left_running(
    cli: Callable[..., Any], registry: MlflowRegistry
) -> None:
    quiet = left_running(registry, hours_ago=12.5)  # an epoch may be that long: 12 h hold + 1 h lease
    assert cli("model", "prune").exit_code == 0
    assert registry._client.get_run(quiet).info.status == "RUNNING"


def test_a_killed_run_resumed_from_its_checkpoint_runs_and_finishes_in_the_same_run(
    cli: Callable[..., Any], registry: MlflowRegistry
) -> None:
    """A reclaimed job resumed days later (`wms pipeline resume`) goes on in its MLflow run."""
    dead = left_running(registry, hours_ago=40)
    assert cli("model", "prune").exit_code == 0
    assert registry._client.get_run(dead).info.status == "KILLED"

    with registry.start_run("train-v2", {}, run_id=dead) as run:
        resumed = registry._client.get_run(dead)
        assert resumed.info.status == "RUNNING"
        assert KILLED_TAG not in resumed.data.tags  # it was not dead after all
        assert CONTINUED_TAG in resumed.data.tags
        # Its last epoch is 40 h old, and its next one minutes away: the daily job leaves it be.
        again = cli("model", "prune")
        assert again.exit_code == 0 and dead[:8] not in again.output
        assert registry._client.get_run(dead).info.status == "RUNNING"
        run.log_metrics({"train_loss": 0.1}, step=2)
    assert registry._client.get_run(dead).info.status == "FINISHED"


def test_a_pipeline_run_marks_runs_left_running(
    cli: Callable[..., Any], registry: MlflowRegistry, tmp_path: Path
) -> None:
    """In `single` MLflow is up only while a pipeline runs there: its start does what the prune does."""
    dead = left_running(registry, hours_ago=14)
    empty = tmp_path / "nothing"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    ran = cli("pipeline", "run", "-d", empty)
    assert f"run {dead[:8]} (train-v2, started " in ran.stderr
    run = registry._client.get_run(dead)
    assert run.info.status == "KILLED"
    assert "marked KILLED by `wms pipeline`" in run.data.tags[KILLED_TAG]
    assert run.info.end_time < (datetime.now(UTC) - timedelta(hours=13)).timestamp() * 1000


@both
def test_a_training_marked_killed_while_it_was_only_silent_ends_finished_and_not_said_killed(
    cli: Callable[..., Any], registry: MlflowRegistry, tmp_path: Path
) -> None:
    """A laptop asleep with its training (suspended, not killed) through the daily prune: it wakes,
    goes on in the same run and ends it; neither the run nor its version says it was killed."""
    idle = registry.project.settings.compute.longest_run
    with registry.start_run("train-v1", {}) as run:
        run.log_metrics({"train_loss": 0.5}, step=1)
        later = datetime.now(UTC) + idle + timedelta(hours=1)  # the prune of the next morning
        assert [s.run_id for s in end_stale_runs(registry, idle, "`wms model prune`", now=later)] == [
            run.run_id
        ]
        assert registry._client.get_run(run.run_id).info.status == "KILLED"
        run.log_metrics({"train_loss": 0.4}, step=2)  # awake: its next epoch
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "model.pt").write_bytes(b"weights")
        run.log_model(tmp_path / "model")
    ended = registry._client.get_run(run.run_id)
    assert ended.info.status == "FINISHED"
    assert KILLED_TAG not in ended.data.tags
    version = registry.register(run.run_id, {"gate": "fail"}).version
    shown = cli("model", "show", version)
    assert shown.exit_code == 0, shown.output
    assert "marked KILLED" not in shown.output
