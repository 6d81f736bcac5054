"""drift-report.yaml: the daily `wms monitor drift` on the serving node, where capture is on, and
the daily `wms model prune` there (split); in single, the prune at the end of the jobs on the GPU instance."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.test_workflow_flow import runs_when_cancelled
from tests.test_workflows import ROOT, evaluate, load, triggers

from wms.times import parse_time

NAME = "drift-report.yaml"
TEXTFILE_DIR = "/var/lib/node-exporter/textfile"


def _values(capture_dir: str, layout: str, schedule: str) -> dict[str, Any]:
    return {
        "vars.WMS_CAPTURE_DIR": capture_dir,
        "vars.WMS_LAYOUT": layout,
        "github.event.schedule": schedule,
        "github.event.repository.private": False,
    }


@pytest.mark.parametrize(
    ("capture_dir", "layout", "runs"),
    [
        ("s3://bucket/wms/inbox", "split", True),
        ("s3://bucket/wms/inbox", "", True),  # WMS_LAYOUT unset is split
        ("", "split", False),  # capture off: no photos to compare
        ("s3://bucket/wms/inbox", "single", False),  # the serving GPU instance sleeps
    ],
)
def test_the_report_runs_daily_on_the_serving_node_only_where_photos_are_captured(
    capture_dir: str, layout: str, runs: bool
) -> None:
    workflow = load(NAME)
    (daily,) = (entry["cron"] for entry in triggers(workflow)["schedule"])
    assert daily.split()[2:] == ["*", "*", "*"] and "workflow_dispatch" in triggers(workflow)
    job = workflow["jobs"]["drift"]
    assert job["runs-on"] == ["self-hosted", "linux", "wms-serve"]
    assert evaluate(job["if"], _values(capture_dir, layout, daily)) is runs
    assert evaluate(job["if"], _values(capture_dir, layout, "")) is runs  # run by hand


def test_the_report_lands_where_node_exporter_reads_and_before_the_stale_alert_fires() -> None:
    job = load(NAME)["jobs"]["drift"]
    assert job["env"]["WMS_MONITOR__TEXTFILE_DIR"] == TEXTFILE_DIR
    assert job["env"]["WMS_SERVE__CAPTURE_DIR"] == "${{ vars.WMS_CAPTURE_DIR }}"
    monitoring = (ROOT / "infrastructure" / "scripts" / "monitoring.sh").read_text()
    assert f"textfile_dir=${{TEXTFILE_DIR:-{TEXTFILE_DIR}}}" in monitoring
    stack = (ROOT / "infrastructure" / "k3s" / "kube-prometheus-stack.yaml").read_text()
    assert TEXTFILE_DIR in stack
    chart = yaml.safe_load((ROOT / "devops" / "helm" / "wms-model" / "values.yaml").read_text())
    assert chart["prometheusRule"]["driftMaxAgeHours"] >= 2 * 24  # one missed day does not page
    # No environment and no secret: the node's role reads the inbox and the store.
    assert "environment" not in job and "secrets." not in yaml.safe_dump(job)
    assert job["timeout-minutes"] <= 120


def test_the_step_runs_wms_monitor_drift_on_production_over_the_last_week(tmp_path: Path) -> None:
    """The step's command as written, with a `wms` that records its arguments."""
    (step,) = [s for s in load(NAME)["jobs"]["drift"]["steps"] if "run" in s]
    fake = tmp_path / "bin" / "wms"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "ARGS": str(tmp_path / "args")}
    subprocess.run(["bash", "-e", "-c", step["run"]], env=env, check=True, timeout=30)
    args = (tmp_path / "args").read_text().splitlines()
    assert args[:2] == ["monitor", "drift"]
    assert args[args.index("--model") + 1] == "production"
    since = parse_time(args[args.index("--since") + 1])
    assert since is not None
    assert abs(datetime.now(UTC) - timedelta(days=7) - since) < timedelta(minutes=5)


def test_the_report_page_the_alert_points_to_is_kept_with_the_run() -> None:
    """WmsInputDrift says to open report.html; the runner's next checkout would have cleaned it away."""
    from wms.config import load_settings

    steps = load(NAME)["jobs"]["drift"]["steps"]
    (kept,) = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    report_dir = load_settings(start=ROOT).settings.monitor.report_dir
    assert kept["with"]["path"].rstrip("/") == str(report_dir) and kept["if"] == "${{ !cancelled() }}"
    rules = (ROOT / "devops" / "helm" / "wms-model" / "files" / "alerts.rules.yaml").read_text()
    assert "report.html" in rules


def _recorded_args(step: dict[str, Any], tmp_path: Path) -> list[str]:
    fake = tmp_path / "bin" / "wms"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "ARGS": str(tmp_path / "args")}
    subprocess.run(["bash", "-e", "-c", step["run"]], env=env, check=True, timeout=30)
    return (tmp_path / "args").read_text().splitlines()


@pytest.mark.parametrize(
    ("capture_dir", "layout", "runs"),
    [
        ("", "split", True),  # capture or not: old candidates' files pile up all the same
        ("s3://bucket/wms/inbox", "", True),
        ("", "single", False),  # MLflow is on the GPU instance, which sleeps: never started for this
    ],
)
def test_the_daily_prune_runs_with_the_setting_on_the_serving_node_and_never_starts_compute(
    capture_dir: str, layout: str, runs: bool, tmp_path: Path
) -> None:
    from wms.config import load_settings

    workflow = load(NAME)
    (daily,) = (entry["cron"] for entry in triggers(workflow)["schedule"])
    job = workflow["jobs"]["prune"]
    assert job["runs-on"] == ["self-hosted", "linux", "wms-serve"]
    assert evaluate(job["if"], _values(capture_dir, layout, daily)) is runs
    assert job["env"]["WMS_TRACKING__URI"] == "${{ vars.WMS_TRACKING_URI || 'http://127.0.0.1:5000' }}"
    checkout = job["steps"][0]
    assert checkout["with"]["ref"] == "${{ github.event.repository.default_branch }}"  # main's ledger
    (step,) = [s for s in job["steps"] if "run" in s]
    assert _recorded_args(step, tmp_path) == ["model", "prune"]  # no --older-than: the setting decides
    assert load_settings(start=ROOT).settings.tracking.prune_after_days == 180
    # Nothing in the workflow starts (or could start) the GPU instance.
    text = yaml.safe_dump(workflow)
    assert "ec2-control" not in text and "WMS_COMPUTE__" not in text and "wms compute" not in text
    assert "environment" not in job and "secrets." not in yaml.safe_dump(job)


# The jobs that run on the GPU instance while it is up in single, and the id of their work's step.
ON_THE_INSTANCE = [
    ("training-data-pipeline.yaml", "train", "pipeline"),
    ("pipeline-sweeper.yaml", "sweep", "sweep"),
]


@pytest.mark.parametrize(("name", "job_id", "work"), ON_THE_INSTANCE)
@pytest.mark.parametrize("layout", ["single", "split", ""])
@pytest.mark.parametrize("outcome", ["success", "failure", "skipped"])
def test_in_single_the_job_on_the_gpu_instance_prunes_after_its_batches_without_failing_for_it(
    name: str, job_id: str, work: str, layout: str, outcome: str, tmp_path: Path
) -> None:
    """single: MLflow sleeps with the GPU instance, which no schedule starts; old candidates' files
    (62 MB each) piled up there until someone ran `wms model prune` by hand while it was up. The
    job that trains there now prunes as it ends, while the run still holds its lease (the stop job
    comes after), once a day at most, and a prune that fails leaves the batch green."""
    job = load(name)["jobs"][job_id]
    steps = job["steps"]
    (prune,) = [s for s in steps if "wms model prune" in s.get("run", "")]
    (done,) = [s for s in steps if s.get("id") == work]
    assert steps.index(prune) > steps.index(done)  # after the batches, never in their way
    values = {"vars.WMS_LAYOUT": layout, f"steps.{work}.outcome": outcome}
    # In split the serving node's daily job prunes; a guard that refused the branch ran no batch.
    assert evaluate(prune["if"], values) is (layout == "single" and outcome != "skipped")
    assert not runs_when_cancelled(prune, values)  # a cancel (or the job's timeout) goes to the stop job
    assert prune["continue-on-error"] is True  # a promoted batch stays green, its deploy and stop run
    assert prune["timeout-minutes"] <= 30
    # No --older-than: the setting decides the age, as on the serving node.
    assert _recorded_args(prune, tmp_path) == ["model", "prune", "--once-a-day"]
    assert prune["env"] == {"GITHUB_TOKEN": "${{ github.token }}"}  # reads main's ledger, no other secret
    stop = load(name)["jobs"]["stop-compute"]
    assert job_id in stop["needs"]
