"""The pipeline never leaves the EC2 instance running: a fault at every stage, SIGTERM while
training, a second pipeline on the same store; and `resume` finishes what a fault stopped.

Runs against moto's EC2 on loopback, with untrained models (train.epochs=0) so each run
takes seconds; one test trains in a real `wms pipeline run` process and sends it SIGTERM.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import TINY_SETTINGS, Ec2Box, Quiet

from wms.config import load_settings, parse_overrides
from wms.data.lease import lease
from wms.data.store import open_store
from wms.errors import BackendError, ConfigError, UsageError
from wms.guards import Interrupted
from wms.pipeline import STAGES, InjectedFault, Pipeline, PipelineRun
from wms.registry import MlflowRegistry

pytestmark = pytest.mark.slow

FAST = [
    "train.epochs=0",
    "compute.backend='ec2'",
    "compute.poll_seconds=0.02",
    "compute.hourly_price_usd=36.0",
]


@pytest.fixture(scope="module")
def shared_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project (one MLflow database) for the module: creating MLflow's tables costs seconds."""
    root = tmp_path_factory.mktemp("faults")
    (root / "wms.toml").write_text(TINY_SETTINGS)
    return root


def pipeline(
    root: Path, box: Ec2Box, *sets: str, fault: str | None = None, notes: list[str] | None = None
) -> Pipeline:
    overrides = parse_overrides([*FAST, f"compute.instance_id='{box.id}'", *sets])
    project = load_settings(start=root, overrides=overrides)
    notify = notes.append if notes is not None else (lambda _line: None)
    # These tests are about the instance's lifecycle; where the model trains does not matter
    # to them (tests/remote trains on an SSH "instance").
    return Pipeline(
        project, MlflowRegistry(project), Quiet(), notify=notify, fault=fault, remote_training=False
    )


def last_record(root: Path) -> dict[str, Any]:
    newest = max((root / ".wms" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return dict(json.loads((newest / "run.json").read_text()))


@pytest.mark.parametrize("stage", STAGES)
def test_a_fault_at_any_stage_stops_the_instance_and_resume_finishes_the_run(
    stage: str, shared_project: Path, ec2_box: Ec2Box, make_batch: Callable[..., Path]
) -> None:
    batch = make_batch(f"batch-{stage}", count=30, seed=10 + STAGES.index(stage))
    with pytest.raises(InjectedFault, match=f"fault injected at stage {stage}"):
        pipeline(shared_project, ec2_box, fault=stage).run(batch)
    assert ec2_box.state() == "stopped"
    record = last_record(shared_project)
    stages = {s["name"]: s for s in record["stages"]}
    assert (record["status"], record["failed_stage"]) == ("failed", stage)
    assert stages[stage]["status"] == "failed" and "WMS_FAULT_STAGE" in stages[stage]["error"]
    assert f"wms pipeline resume {record['run_id']}" in record["summary"]
    held = STAGES.index("start_compute") <= STAGES.index(stage) <= STAGES.index("stop_compute")
    if held and stage != "start_compute":
        assert stages["start_compute"]["status"] == "ok"  # the instance really ran before the fault
    if stage == "stop_compute":
        assert record["outputs"]["compute"]["released_by"] == "safety net"

    resumed = pipeline(shared_project, ec2_box).resume(record["run_id"])
    assert resumed.status == "ok", resumed.summary
    assert ec2_box.state() == "stopped"
    assert resumed.stages[stage].status in ("ok", "skipped")
    # No data branch (not a git repository) and deploy.in_pipeline off in tests: both end skipped.
    assert (resumed.stages["publish"].status, resumed.stages["deploy"].status) == ("skipped", "skipped")
    if STAGES.index(stage) > STAGES.index("train"):  # the model was not trained again
        assert resumed.stages["train"].started_at == stages["train"]["started_at"]
        assert resumed.outputs["mlflow_run_id"] == record["outputs"]["mlflow_run_id"]
    saved = PipelineRun.load(resumed.run_dir)
    assert saved.status == "ok" and saved.summary == resumed.summary
    usage = saved.outputs["compute"]
    assert usage["instance_seconds"] > 0
    assert usage["cost_usd"] == pytest.approx(usage["instance_seconds"] * 36.0 / 3600, abs=1e-3)


def test_sigterm_at_a_stage_releases_the_instance_and_restores_the_handler(
    shared_project: Path, ec2_box: Ec2Box, make_batch: Callable[..., Path]
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="SIGTERM"):
        pipeline(shared_project, ec2_box, fault="gate:SIGTERM").run(make_batch("b", count=40, seed=30))
    assert signal.getsignal(signal.SIGTERM) is before
    assert ec2_box.state() == "stopped"
    record = last_record(shared_project)
    assert record["failed_stage"] == "gate"
    assert "interrupted by SIGTERM" in {s["name"]: s for s in record["stages"]}["gate"]["error"]


@pytest.mark.parametrize("setting", ["train.image_size=30", "train.devices=2"])
def test_train_settings_that_cannot_train_stop_the_run_before_the_instance_starts(
    setting: str,
    shared_project: Path,
    ec2_box: Ec2Box,
    make_batch: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found at the train stage, they cost an instance start and left a failed run; now nothing starts."""
    runs = shared_project / ".wms" / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    runner = pipeline(shared_project, ec2_box, setting)
    starts: list[object] = []
    start = runner.compute.start
    monkeypatch.setattr(runner.compute, "start", lambda *a, **kw: starts.append(a) or start(*a, **kw))
    with pytest.raises(ConfigError, match=setting.split("=")[0]):
        runner.run(make_batch("b", count=30, seed=33))
    assert starts == [] and ec2_box.state() == "stopped"
    assert runner.last_run is None and (set(runs.iterdir()) if runs.is_dir() else set()) == before


def test_a_finished_or_unknown_run_cannot_be_resumed(
    shared_project: Path, ec2_box: Ec2Box, make_batch: Callable[..., Path]
) -> None:
    done = pipeline(shared_project, ec2_box).run(make_batch("b", count=30, seed=31))
    with pytest.raises(UsageError, match="nothing to resume"):
        pipeline(shared_project, ec2_box).resume(done.run_id)
    with pytest.raises(UsageError, match="no pipeline run 'nope'"):
        pipeline(shared_project, ec2_box).resume("nope")


def test_a_second_pipeline_waits_for_the_lock_or_names_its_holder(
    shared_project: Path, ec2_box: Ec2Box, make_batch: Callable[..., Path]
) -> None:
    store = open_store(load_settings(start=shared_project))
    taken, release = threading.Event(), threading.Event()

    def other_pipeline() -> None:
        with lease(
            store.fs, f"{store.root}/pipeline.lock.json", owner="pipeline run OTHER (ci@runner pid 7)"
        ):
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=other_pipeline)
    holder.start()
    try:
        assert taken.wait(10)
        batch = make_batch("b", count=30, seed=32)
        with pytest.raises(
            BackendError, match=r"another pipeline is running .*pipeline run OTHER \(ci@runner"
        ):
            pipeline(shared_project, ec2_box, "store.lock_wait_seconds=0").run(batch)
        notes: list[str] = []
        threading.Timer(0.5, release.set).start()
        done = pipeline(shared_project, ec2_box, "store.lock_wait_seconds=30", notes=notes).run(batch)
        assert done.status == "ok"
        assert any("waiting up to 30 s for pipeline run OTHER" in n for n in notes)
    finally:
        release.set()
        holder.join()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_run_that_lost_the_store_lock_stops_before_it_writes(
    shared_project: Path, ec2_box: Ec2Box, make_batch: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clocks out of step, or a stall past the lock's TTL: another run may hold the store now."""
    import wms.stage_runner

    monkeypatch.setattr(wms.stage_runner, "renew", lambda *_args: False)  # another writer took it
    monkeypatch.setattr(Pipeline, "_beat_interval", lambda _self: 0.05)
    runner = pipeline(shared_project, ec2_box)
    original = runner._merge_and_validate

    def slow_merge(*args: Any) -> Any:
        time.sleep(0.5)  # a heartbeat comes while the run merges
        return original(*args)

    monkeypatch.setattr(runner, "_merge_and_validate", slow_merge)
    with pytest.raises(BackendError, match="this run lost the dataset store's lock"):
        runner.run(make_batch("b", count=30, seed=41))
    stages = {s["name"]: s["status"] for s in last_record(shared_project)["stages"]}
    assert stages["promote"] != "ok" and stages["publish"] != "ok", stages
    assert ec2_box.state() != "running"  # compute is given back all the same
