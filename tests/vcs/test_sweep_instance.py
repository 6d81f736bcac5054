"""The split layout's sweep and the GPU instance: started once for all its batches, stopped once
at the end, and stopped whatever way the sweep ends.

`wms pipeline sweep` against moto's EC2 on loopback (compute.train_on = "instance", as the
sweeper workflow runs it on the serving node), with real git repositories and untrained models
(train.epochs = 0). Training itself stays in this process: tests/remote trains over SSH.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.conftest import TINY_SETTINGS, Ec2Box
from tests.vcs.test_every_batch import push_batch

import wms.pipeline
import wms.vcs.guard
from wms.compute.ec2 import Ec2Compute
from wms.compute.ec2_instance import Ec2Instance
from wms.compute.leases import HOLDER_TAG_PREFIX
from wms.config import ComputeSettings
from wms.errors import BackendError
from wms.guards import Interrupted
from wms.runs import PipelineRun, StageRecord, TrainedRun
from wms.times import parse_time

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo

pytestmark = pytest.mark.slow


class Requests:
    """The EC2 start and stop requests WMS sends, in order."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def count(self, method: str) -> int:
        return self.sent.count(method)


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> Requests:
    seen = Requests()
    call = Ec2Instance._call

    def recorded(self: Ec2Instance, what: str, method: str, **kwargs: Any) -> Any:
        if method in ("start_instances", "stop_instances"):
            seen.sent.append(method)
        return call(self, what, method, **kwargs)

    monkeypatch.setattr(Ec2Instance, "_call", recorded)
    return seen


class Training:
    """The batches the sweep trained (their run ids), and the ones made to fail: batch number → error."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.failing: dict[int, BaseException] = {}


@pytest.fixture
def split_sweep(
    repo: Repo, ec2_box: Ec2Box, empty_tracking_db: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Training]:
    """Two data branches to sweep, and the sweeper's settings for the split layout; yields the
    train stages' log (one entry per batch trained) that a test may make fail."""
    repo.write("wms.toml", TINY_SETTINGS + '\n[git]\nbase_branch = "main"\n')
    repo.commit("tiny settings")
    repo.git("push", "-q", "origin", "main")
    (repo.work / ".wms").mkdir()
    shutil.copyfile(empty_tracking_db, repo.work / ".wms" / "mlflow.db")
    push_batch(repo, "20260102-030405", seed=1)
    push_batch(repo, "20260102-030406", seed=2)
    for name, value in {
        "GITHUB_RUN_ID": "77",  # the sweep's holder gh-run-77, its pipelines' gh-run-77-pipeline
        "WMS_COMPUTE__BACKEND": "ec2",
        "WMS_COMPUTE__TRAIN_ON": "instance",
        "WMS_COMPUTE__INSTANCE_ID": ec2_box.id,
        "WMS_COMPUTE__POLL_SECONDS": "0.02",
        "WMS_TRAIN__EPOCHS": "0",
    }.items():
        monkeypatch.setenv(name, value)
    training = Training()

    class TrainedHere(wms.pipeline.Pipeline):
        """The sweep's pipeline, training in this process instead of over SSH."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs, remote_training=False)

        def _train(self, run: PipelineRun, dataset: Path, version: str, st: StageRecord) -> TrainedRun:
            training.runs.append(run.run_id)
            if len(training.runs) in training.failing:
                raise training.failing[len(training.runs)]
            return super()._train(run, dataset, version, st)

    monkeypatch.setattr(wms.pipeline, "Pipeline", TrainedHere)
    yield training


def leases(box: Ec2Box) -> list[str]:
    return sorted(k for k in box.tags() if k.startswith(HOLDER_TAG_PREFIX))


def test_a_split_sweep_starts_the_instance_once_for_its_batches_and_stops_it_once(
    split_sweep: Training, ec2_box: Ec2Box, requests: Requests, cli: Callable[..., Any]
) -> None:
    swept = cli("pipeline", "sweep")

    assert swept.exit_code == 0, swept.output
    assert len(split_sweep.runs) == 2  # both batches trained on the instance
    assert requests.sent == ["start_instances", "stop_instances"], requests.sent
    assert ec2_box.state() == "stopped"
    assert leases(ec2_box) == []  # nothing of this run holds it any more
    # The first batch's stop_compute says why the instance stayed up.
    assert "ec2: kept running: held by gh-run-77-sweep" in swept.output


@pytest.mark.parametrize(
    "error",
    [
        BackendError("the training job on the instance failed"),  # a batch that fails
        RuntimeError("a bug"),  # an exception that ends the sweep
        Interrupted("SIGTERM"),  # the job cancelled while the batch trains
    ],
    ids=["batch-fails", "exception", "sigterm"],
)
def test_a_split_sweep_whose_second_batch_fails_still_stops_the_instance_once(
    error: BaseException,
    split_sweep: Training,
    ec2_box: Ec2Box,
    requests: Requests,
    cli: Callable[..., Any],
) -> None:
    split_sweep.failing[2] = error

    if isinstance(error, RuntimeError):
        with pytest.raises(RuntimeError, match="a bug"):
            cli("pipeline", "sweep")
    else:
        swept = cli("pipeline", "sweep")
        assert swept.exit_code == (1 if isinstance(error, BackendError) else Interrupted.exit_code)

    assert len(split_sweep.runs) == 2
    assert requests.sent == ["start_instances", "stop_instances"], requests.sent
    assert ec2_box.state() == "stopped"
    assert leases(ec2_box) == []


def test_the_reaper_leaves_the_instance_to_a_live_sweep_between_its_batches(
    split_sweep: Training,
    ec2_box: Ec2Box,
    requests: Requests,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Leases of 3 s: between the batches, longer than a lease, no pipeline holds the instance;
    the sweep's own lease, renewed while it lives and never past one lease from now, keeps it."""
    monkeypatch.setenv("WMS_COMPUTE__LEASE_MINUTES", "0.05")
    reaped: list[str] = []
    take = wms.vcs.guard.take_incoming

    def between_batches(project: Any, sha: str, out: Path) -> Any:
        if split_sweep.runs:  # the first batch has trained and stopped compute
            time.sleep(4)
            reaper = Ec2Compute(ComputeSettings(backend="ec2", poll_seconds=0.02), holder="reaper")
            reaped.extend(r.detail for r in reaper.reap() if r.instance_id == ec2_box.id)
            sweep_lease = parse_time(ec2_box.tags()[f"{HOLDER_TAG_PREFIX}gh-run-77-sweep"])
            assert sweep_lease is not None
            assert sweep_lease <= datetime.now(UTC) + timedelta(seconds=3)
            assert leases(ec2_box) == [f"{HOLDER_TAG_PREFIX}gh-run-77-sweep"]
        return take(project, sha, out)

    monkeypatch.setattr(wms.vcs.guard, "take_incoming", between_batches)
    swept = cli("pipeline", "sweep")

    assert swept.exit_code == 0, swept.output
    (detail,) = reaped
    assert "held by gh-run-77-sweep" in detail and "left running" in detail
    assert requests.sent == ["start_instances", "stop_instances"], requests.sent
    assert ec2_box.state() == "stopped"
