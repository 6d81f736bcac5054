"""Where the workflows' tokens go: never into .git/config, only into the steps that fetch or push.

actions/checkout writes the job's token into .git/config unless `persist-credentials: false`,
and every later step can read it there, the one that decodes a data branch's images included.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.git_http import serve_git
from tests.test_workflows import ROOT, WORKFLOWS, load, triggers

TOKEN = "ghs_jobtoken0123456789"


def checkouts() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path in sorted(WORKFLOWS.glob("*.yaml")):
        for job_id, job in load(path.name)["jobs"].items():
            for step in job.get("steps", []):
                if str(step.get("uses", "")).startswith("actions/checkout@"):
                    found.append((path.name, job_id, step.get("with") or {}))
    return found


def test_no_checkout_leaves_a_token_in_git_config() -> None:
    assert len(checkouts()) >= 15
    for name, job, options in checkouts():
        assert options.get("persist-credentials") is False, (name, job)
        assert "token" not in options, (name, job)  # the job's own token is the default


def test_the_step_that_decodes_the_branchs_images_has_no_token() -> None:
    job = load("training-data-pipeline.yaml")["jobs"]["validate"]
    (decode,) = [s for s in job["steps"] if s.get("id") == "validate"]
    assert decode["run"].startswith("wms data validate incoming")
    reach = yaml.safe_dump([job.get("env", {}), decode.get("env", {})])
    assert "GITHUB_TOKEN:" not in reach and "github.token" not in reach and "secrets." not in reach


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("job", ["validate", "train"])
def test_the_guard_fetches_main_of_a_private_repository_with_no_token_on_disk(
    job: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard and take steps, run as written with their job's env, against a remote that
    answers only a token: they fetch main through the job's credential helper, and the token is
    nowhere in the repository's files afterwards."""
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n  name = T\n  email = t@example.com\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    served, work = tmp_path / "served", tmp_path / "work"
    served.mkdir()
    remote = served / "meters.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    _git(tmp_path, "init", "-q", "-b", "main", str(work))
    (work / "wms.toml").write_text("")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "main")
    _git(work, "push", "-q", str(remote), "main")
    _git(work, "switch", "-q", "-c", "data/1")
    for path in ("data/incoming/images/m1.png", "data/incoming/masks/m1.png"):
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_bytes(b"png")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "data")
    sha = _git(work, "rev-parse", "HEAD")
    _git(work, "push", "-q", str(remote), "data/1")
    _git(work, "switch", "-q", "main")
    shim = tmp_path / "bin" / "wms"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m wms "$@"\n')
    shim.chmod(0o755)

    spec = load("training-data-pipeline.yaml")["jobs"][job]
    steps = [s for s in spec["steps"] if s.get("run", "").startswith(("wms vcs guard", "wms vcs take"))]
    assert [s["run"].split()[2] for s in steps] == ["guard-branch", "take-incoming"]
    with serve_git(served, {TOKEN: "github-actions"}) as url:
        _git(work, "remote", "add", "origin", f"{url}/meters.git")
        for step in steps:
            env = {
                **os.environ,
                **{k: str(v) for k, v in spec.get("env", {}).items() if "${{" not in str(v)},
                **{k: TOKEN for k, v in step.get("env", {}).items() if v.startswith("${{ github.token }}")},
                "PATH": f"{shim.parent}:/usr/bin:/bin",
                "PYTHONPATH": str(ROOT / "src"),
                "GITHUB_SHA": sha,
                "GIT_TERMINAL_PROMPT": "0",
            }
            done = subprocess.run(
                ["bash", "-e", "-c", step["run"]],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
    assert _git(work, "rev-parse", "origin/main") == _git(work, "rev-parse", "main")  # fetched
    on_disk = b"".join(p.read_bytes() for p in (work / ".git").rglob("*") if p.is_file())
    assert TOKEN.encode() not in on_disk


HELPER_KEYS = ("GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0")


@pytest.mark.parametrize(
    ("name", "job", "command"),
    [
        ("ci.yaml", "data-pull-request", "wms vcs guard-branch"),
        ("pipeline-sweeper.yaml", "find", "wms pipeline sweep --dry-run"),
        ("pipeline-sweeper.yaml", "sweep", "wms pipeline sweep"),
        ("training-data-pipeline.yaml", "train", "wms pipeline run"),
    ],
)
def test_every_job_that_fetches_or_pushes_hands_git_the_token_in_that_step_alone(
    name: str, job: str, command: str
) -> None:
    """The same credential helper as the guard's above; the token only in the step's env."""
    spec = load(name)["jobs"][job]
    helper = {k: load("training-data-pipeline.yaml")["jobs"]["validate"]["env"][k] for k in HELPER_KEYS}
    assert {k: spec.get("env", {}).get(k) for k in HELPER_KEYS} == helper, (name, job)
    (step,) = [s for s in spec["steps"] if str(s.get("run", "")).startswith(command)]
    assert step["env"]["GITHUB_TOKEN"] == "${{ github.token }}"


def test_the_sweepers_look_never_waits_for_a_reviewer() -> None:
    """Reviewers may guard wms-production (training, deploying). The look runs every 30 minutes
    and trains nothing: in wms-production every sweep waited for a person, work or none."""
    jobs = load("pipeline-sweeper.yaml")["jobs"]
    assert jobs["find"]["environment"] == "wms-sweep"
    assert [s["run"] for s in jobs["find"]["steps"] if "run" in s] == ["wms pipeline sweep --dry-run"]
    assert jobs["sweep"]["environment"] == "wms-production"  # the training a person may approve
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "Never put reviewers on `wms-sweep`" in readme
    assert "Limit `wms-sweep` to `main`" in readme  # its deployment branches: the schedule runs on main
    assert triggers(load("pipeline-sweeper.yaml")).keys() == {"schedule", "workflow_dispatch"}


ACTION = ROOT / ".github" / "actions" / "aws-credentials" / "action.yaml"
ONE_HOUR = 3600  # configure-aws-credentials' role duration for OIDC when none is asked for


def role_max_session(terraform: dict[str, Any], environment: str) -> int:
    """aws_iam_role.github's max_session_duration for `environment` (AWS's default: one hour)."""
    value = str(terraform["resource"]["aws_iam_role.github"].get("max_session_duration", ONE_HOUR))
    choice = re.fullmatch(r'\$\{each\.key == "([\w-]+)" \? (\d+) : (\d+)\}', value)
    if choice:
        return int(choice[2] if environment == choice[1] else choice[3])
    return int(value)


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yaml")))
def test_oidc_credentials_last_as_long_as_the_job_that_holds_them(
    name: str, terraform: dict[str, Any]
) -> None:
    """An OIDC role's credentials ran out after one hour: a pipeline that waited for the store's
    lock or trained longer could renew neither that lock nor its lease on the instance, and failed."""
    action = yaml.safe_load(ACTION.read_text())
    assert int(action["inputs"]["role-duration-seconds"]["default"]) == ONE_HOUR
    (oidc,) = [s for s in action["runs"]["steps"] if "role-to-assume" in s["with"]]
    assert oidc["with"]["role-duration-seconds"] == "${{ inputs.role-duration-seconds }}"
    for job_id, job in load(name)["jobs"].items():
        for step in job.get("steps", []):
            if step.get("uses") == "./.github/actions/aws-credentials":
                asked = int(step["with"].get("role-duration-seconds", ONE_HOUR))
                assert asked >= 60 * int(job["timeout-minutes"]), (name, job_id, asked)
                assert asked <= role_max_session(terraform, job["environment"]), (name, job_id, asked)
