"""Every pushed batch is trained or reported, and main is the one word on production.

The production loop as the workflows drive it, on one machine with the local git host: the
checkout holds main's code; each batch is a `data/...` branch on the remote, its pairs taken
from git (`wms vcs take-incoming`) and run with `wms pipeline run --branch --sha`. Three
branches are pushed while a run is in progress (cut from main before that run promotes),
a fourth run is cancelled while it waits for the store's lock, and `wms pipeline sweep`
catches up whatever has no finished run. At the end every batch is in main's dataset or
has a record saying why not, and main's pointer files, the `production` alias and the
deployed version agree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tests.conftest import TINY_SETTINGS

from wms.config import load_settings
from wms.data.synth import synthesize
from wms.deploy.local import LocalDeployer, free_port
from wms.registry import MlflowRegistry

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo

pytestmark = pytest.mark.slow
WMS = str(Path(sys.executable).with_name("wms"))


def push_batch(repo: Repo, name: str, seed: int) -> str:
    """A data branch cut from main as it is now, pushed to the remote only (as the hook leaves it)."""
    branch = f"data/{name}"
    repo.git("switch", "-q", "-c", branch, "main")
    synthesize(repo.work / "data" / "incoming", count=24, size=64, seed=seed)
    sha = repo.commit(f"batch {name}")
    repo.git("push", "-q", "origin", branch)
    repo.git("switch", "-q", "main")
    repo.git("branch", "-q", "-D", branch)
    return sha


def start_run(repo: Repo, name: str, sha: str, *sets: str) -> subprocess.Popen[str]:
    """The train job of one workflow run: take the branch's pairs, run the pipeline on main's checkout."""
    out = repo.work / ".wms" / "incoming" / name
    taken = subprocess.run(
        [WMS, "vcs", "take-incoming", "--sha", sha, "--out", str(out)],
        cwd=repo.work,
        capture_output=True,
        text=True,
    )
    assert taken.returncode == 0, taken.stdout + taken.stderr
    args = [WMS, *sets, "pipeline", "run", "--new-data", str(out), "--branch", f"data/{name}", "--sha", sha]
    return subprocess.Popen(args, cwd=repo.work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def record(repo: Repo, sha: str) -> dict[str, Any] | None:
    path = repo.work / ".wms" / "store" / "batches" / f"{sha}.json"
    return dict(json.loads(path.read_text())) if path.exists() else None


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def test_batches_pushed_during_a_run_and_a_cancelled_run_all_end_trained_or_reported(
    repo: Repo, cli: Callable[..., Any]
) -> None:
    port = free_port()
    repo.write(
        "wms.toml",
        TINY_SETTINGS + f'\n[git]\nbase_branch = "main"\n\n[store]\nlock_wait_seconds = 600\n\n'
        f"[serve]\nport = {port}\n",
    )
    repo.commit("tiny settings")
    repo.git("push", "-q", "origin", "main")

    first = push_batch(repo, "a", seed=1)
    run_a = start_run(repo, "a", first, "--set", "train.epochs=1")
    wait_for("run a to hold the store", lambda: (record(repo, first) or {}).get("status") == "running")
    os.kill(run_a.pid, signal.SIGSTOP)  # "in progress" for as long as the test needs
    try:
        later = {name: push_batch(repo, name, seed) for name, seed in (("b", 2), ("c", 3), ("d", 4))}
        cancelled = start_run(repo, "b", later["b"])
        time.sleep(3)  # it waits for the store lock that run a holds
        assert cancelled.poll() is None and record(repo, later["b"]) is None
        cancelled.send_signal(signal.SIGTERM)  # the workflow run is cancelled
        cancelled.wait(timeout=60)
    finally:
        os.kill(run_a.pid, signal.SIGCONT)
    output_a, _ = run_a.communicate(timeout=300)
    assert run_a.returncode == 0, output_a
    assert "promoted version 1" in output_a
    assert record(repo, later["b"]) is None  # the cancelled run never started its batch

    swept = cli("pipeline", "sweep")
    assert swept.exit_code == 0, swept.output
    for name in ("b", "c", "d"):
        assert f"running data/{name}" in swept.output
    assert "running data/a" not in swept.output  # finished: not trained again
    again = cli("pipeline", "sweep", "--dry-run")
    assert "nothing to do" in again.output

    # Every batch is in main's dataset, or its record says why not.
    project = load_settings(start=repo.work)
    main_pointer = json.loads(repo.out("show", "main:data/dataset.json"))
    manifest = json.loads(
        (repo.work / ".wms" / "store" / "versions" / f"{main_pointer['version']}.json").read_text()
    )
    remote = repo.remote_branches()
    promoted = []
    for name, seed, sha in [("a", 1, first)] + [(n, s, later[n]) for n, s in (("b", 2), ("c", 3), ("d", 4))]:
        rec = record(repo, sha)
        assert rec is not None, name
        ids = {f"synth_s{seed}_{i:05d}" for i in range(24)}
        if rec["status"] == "promoted":
            promoted.append(name)
            assert ids <= set(manifest["pairs"]), f"batch {name} promoted but not in main's dataset"
        else:
            assert rec["status"] == "not-promoted" and rec["summary"].startswith("not promoted:"), rec
            assert not ids & set(manifest["pairs"])
            assert f"data/{name}" in remote  # the branch stays for review
    assert promoted[0] == "a"
    # Main never drifted: batch a's pairs stay in main's dataset whatever was promoted after it,
    # though b, c and d were cut from main before a was promoted.
    assert {f"synth_s1_{i:05d}" for i in range(24)} <= set(manifest["pairs"])

    # One training per batch: the cancelled run trained nothing, the sweeper skipped a.
    trainings: dict[str, int] = {}
    for run_json in (repo.work / ".wms" / "runs").glob("*/run.json"):
        body = json.loads(run_json.read_text())
        stages = {s["name"]: s["status"] for s in body["stages"]}
        sha = (body["outputs"].get("batch") or {}).get("sha")
        if sha and stages["train"] == "ok":
            trainings[sha] = trainings.get(sha, 0) + 1
    assert trainings == {sha: 1 for sha in [first, *later.values()]}

    # main's files, the alias and the deployment agree.
    current = json.loads(repo.out("show", "main:models/production_current.json"))
    registry = MlflowRegistry(project)
    production = registry.production()
    assert production is not None and production.version == current["to_version"]
    assert production.tags["dataset_version"] == main_pointer["version"] == current["dataset_version"]
    history = repo.out("show", "main:models/production_history.jsonl").splitlines()
    assert len(history) == len(promoted)
    try:
        deployed = cli("model", "reconcile", "--deploy")
        assert deployed.exit_code == 0, deployed.output
        ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10).json()
        assert str(ready["version"]) == current["to_version"]
    finally:
        LocalDeployer(project, lambda _: None).stop()
