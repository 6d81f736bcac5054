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
from tests.docs import all_docs
from tests.git_http import serve_git
from tests.test_workflows import ROOT, WORKFLOWS, evaluate, load, triggers
from tests.vcs.test_github import REPO, FakeGitHub, github

__all__ = ["github"]  # the fake GitHub API fixture, used here too

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
    job = load("data-push.yaml")["jobs"]["validate"]
    (decode,) = [s for s in job["steps"] if s.get("id") == "validate"]
    assert decode["run"].startswith("wms data validate incoming")
    reach = yaml.safe_dump([job.get("env", {}), decode.get("env", {})])
    assert "GITHUB_TOKEN:" not in reach and "github.token" not in reach and "secrets." not in reach


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize(
    ("name", "job"), [("data-push.yaml", "validate"), ("training-data-pipeline.yaml", "train")]
)
def test_the_guard_fetches_main_of_a_private_repository_with_no_token_on_disk(
    name: str, job: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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

    spec = load(name)["jobs"][job]
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
                "BATCH_SHA": sha,  # the job's env: github.sha (Data push), workflow_run.head_sha (pipeline)
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
    helper = {k: load("data-push.yaml")["jobs"]["validate"]["env"][k] for k in HELPER_KEYS}
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
    readme = " ".join(all_docs().split())
    assert "Never put reviewers on `wms-sweep`" in readme
    assert "each limited to `main`" in readme  # its deployment branches: the schedule runs on main
    assert triggers(load("pipeline-sweeper.yaml")).keys() == {"schedule", "workflow_dispatch"}


ACTION = ROOT / ".github" / "actions" / "aws-credentials" / "action.yaml"
ONE_HOUR = 3600  # configure-aws-credentials' role duration for OIDC when none is asked for


def role_max_session(terraform: dict[str, Any], environment: str) -> int:
    """aws_iam_role.github's max_session_duration for `environment` (AWS's default: one hour)."""
    value = str(terraform["resource"]["aws_iam_role.github"].get("max_session_duration", ONE_HOUR))
    choice = re.fullmatch(r"\$\{lookup\(\{(.*)\}, each\.key, (\d+)\)\}", value)
    if choice:
        table = dict(re.findall(r'"([\w-]+)" = (\d+)', choice[1]))
        return int(table.get(environment, choice[2]))
    return int(value)


def largest(value: Any) -> int:
    """A number, or the largest a workflow expression picks from (`a && 95 || 25`)."""
    return max(int(n) for n in re.findall(r"\d+", str(value)))


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
                asked = largest(step["with"].get("role-duration-seconds", ONE_HOUR))
                assert asked >= 60 * largest(job["timeout-minutes"]), (name, job_id, asked)
                assert asked <= role_max_session(terraform, job["environment"]), (name, job_id, asked)


# -- the validation comment: posted by a job of its own, which never decodes the branch's files --

COMMENT_TOKEN = "ghs_commenttoken0123"


def read_github_output(path: Path) -> dict[str, str]:
    """$GITHUB_OUTPUT as the runner reads it: `key=value` lines and `key<<DELIMITER` blocks."""
    values, lines = {}, path.read_text().split("\n")
    while lines:
        line = lines.pop(0)
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            end = lines.index(delimiter)
            values[key], lines = "\n".join(lines[:end]), lines[end + 1 :]
        elif line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def _wms_on_path(folder: Path) -> Path:
    shim = folder / "wms"
    shim.parent.mkdir(parents=True, exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m wms "$@"\n')
    shim.chmod(0o755)
    return folder


def run_step(step: dict[str, Any], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A step's script as the runner runs it: bash, with the step's `env` already resolved in `env`."""
    return subprocess.run(
        ["bash", "-e", "-c", step["run"]], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_job_that_decodes_the_branchs_images_cannot_write_to_the_repository() -> None:
    """The validate job held `contents: write` for the one comment it posts on a failure, while it
    decoded the pushed images: whatever runs in that job could use the token. The comment now has
    a job of its own, which runs none of the branch's files and gets the report as text."""
    jobs = load("data-push.yaml")["jobs"]
    assert jobs["validate"]["permissions"] == {"contents": "read"}
    comment = jobs["comment"]
    assert comment["needs"] == "validate"
    assert comment["permissions"] == {"contents": "write", "statuses": "write"}
    (checkout,) = [s for s in comment["steps"] if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert checkout["with"]["ref"] == "${{ github.event.repository.default_branch }}"  # main's code
    (post,) = [s for s in comment["steps"] if "run" in s]
    assert "${{" not in post["run"]  # the report reaches the script through its environment only
    assert post["env"]["REPORT"] == "${{ needs.validate.outputs.report }}"
    assert not any(s.get("run", "").startswith(("wms vcs take", "wms data")) for s in comment["steps"])


def _failed_validation(project: Path, make_batch: Any, tmp_path: Path) -> tuple[dict[str, str], str]:
    """The validate job's two last steps, run as written on a batch with bad files: its outputs."""
    import shutil

    from PIL import Image

    batch = make_batch("pushed", count=4)
    grey = sorted((batch / "masks").iterdir())[0]
    Image.new("L", (64, 64), 128).save(grey)  # not 0/255
    odd = "meter `touch x` $(touch pwned)"
    shutil.copy(sorted((batch / "images").iterdir())[1], batch / "images" / f"{odd}.png")  # no mask
    shutil.move(batch, project / "incoming")
    steps = load("data-push.yaml")["jobs"]["validate"]["steps"]
    validate = next(s for s in steps if s.get("id") == "validate")
    hand_over = next(s for s in steps if s.get("id") == "report")
    env = {**os.environ, "PATH": f"{_wms_on_path(tmp_path / 'bin')}:/usr/bin:/bin"}
    env["PYTHONPATH"] = str(ROOT / "src")
    assert run_step(validate, project, env).returncode == 1
    output = tmp_path / "validate-output"
    done = run_step(hand_over, project, {**env, "GITHUB_OUTPUT": str(output)})
    assert done.returncode == 0, done.stderr
    return read_github_output(output), odd


def _post(project: Path, report: str, fake_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The comment job's step, run as written with what GitHub would put in its environment."""
    (post,) = [s for s in load("data-push.yaml")["jobs"]["comment"]["steps"] if "run" in s]
    resolved = {"${{ github.token }}": COMMENT_TOKEN, "${{ needs.validate.outputs.report }}": report}
    env = {
        **os.environ,
        **{k: resolved.get(v, v) for k, v in post["env"].items()},
        "PATH": f"{_wms_on_path(tmp_path / 'bin')}:/usr/bin:/bin",
        "PYTHONPATH": str(ROOT / "src"),
        "GITHUB_SHA": "c" * 40,
        "GITHUB_REPOSITORY": REPO,
        "WMS_GIT__API_URL": fake_url,
    }
    return run_step(post, project, env)


def test_a_failed_validation_is_commented_by_the_comment_job_with_every_file_to_fix(
    project_dir: Path, make_batch: Any, tmp_path: Path, github: FakeGitHub
) -> None:
    outputs, odd = _failed_validation(project_dir, make_batch, tmp_path)
    condition = load("data-push.yaml")["jobs"]["comment"]["if"]
    assert evaluate(condition, {"failure()": True, "needs.validate.outputs.report": outputs["report"]})
    assert not evaluate(condition, {"failure()": True, "needs.validate.outputs.report": ""})  # guard refused
    route = f"POST /repos/{REPO}/commits/{'c' * 40}/comments"
    github.answer(route, 201, {"html_url": "https://github.com/acme/meters/commit/c#r1"})
    github.answer(f"POST /repos/{REPO}/statuses/{'c' * 40}", 201, {})

    done = _post(project_dir, outputs["report"], github.url, tmp_path)

    assert done.returncode == 0, done.stderr
    [posted] = github.calls(route)
    assert posted.headers["Authorization"] == f"Bearer {COMMENT_TOKEN}"
    body = posted.body["body"]
    assert body.startswith("### WMS: the new data did not pass validation")
    assert "non_binary_mask" in body and f"images/{odd}.png" in body  # the name as pushed, never run
    assert "push to main again" in body
    assert not (project_dir / "pwned").exists() and not (project_dir / "x").exists()
    # The commit says its batch is rejected, which the sweeper's look reads: no run starts for it.
    [status] = github.calls(f"POST /repos/{REPO}/statuses/{'c' * 40}")
    assert status.headers["Authorization"] == f"Bearer {COMMENT_TOKEN}"
    assert (status.body["state"], status.body["context"]) == ("failure", "WMS training")
    assert status.body["description"].startswith("rejected: the new pairs did not pass validation")


def test_a_long_report_still_reaches_the_comment_job_cut_to_fit(
    project_dir: Path, tmp_path: Path, github: FakeGitHub
) -> None:
    """A job output reaches the comment job's step through its environment, where Linux takes at
    most 128 KiB per variable: a longer report would stop the step before it starts."""
    rows = "".join(f"| missing_mask | error | images/zähler-{i:05d}.png | no mask |\n" for i in range(4000))
    (project_dir / "validation.md").write_text(rows)
    assert len(rows.encode()) > 128 * 1024
    (hand_over,) = [s for s in load("data-push.yaml")["jobs"]["validate"]["steps"] if s.get("id") == "report"]
    env = {**os.environ, "PATH": f"{_wms_on_path(tmp_path / 'bin')}:/usr/bin:/bin"}
    output = tmp_path / "validate-output"
    env |= {"PYTHONPATH": str(ROOT / "src"), "GITHUB_OUTPUT": str(output)}
    assert run_step(hand_over, project_dir, env).returncode == 0
    report = read_github_output(output)["report"]
    route = f"POST /repos/{REPO}/commits/{'c' * 40}/comments"
    github.answer(route, 201, {"html_url": "https://github.com/acme/meters/commit/c#r1"})

    done = _post(project_dir, report, github.url, tmp_path)

    assert done.returncode == 0, done.stderr
    [posted] = github.calls(route)
    assert "images/zähler-00000.png" in posted.body["body"]
    assert "cut to fit" in posted.body["body"] and len(posted.body["body"]) <= 65_536


def test_every_job_that_decodes_others_images_beside_secrets_requires_the_confined_decoder() -> None:
    """The pipeline and the sweep decode a pushed batch with the job's tokens at hand, the drift
    report kept photos with the serving node's role: none of them may fall back to decoding in
    the job's own process on a runner that cannot confine the decoder (wms.sandbox)."""
    decodes = re.compile(r"\bwms (pipeline run|pipeline sweep(?! --dry-run)|monitor drift)\b")
    found = []
    for path in sorted(WORKFLOWS.glob("*.yaml")):
        for job_id, job in load(path.name)["jobs"].items():
            if any(decodes.search(str(step.get("run", ""))) for step in job.get("steps", [])):
                found.append((path.name, job_id))
                assert job["env"].get("WMS_DATA__DECODE_SANDBOX") == "required", (path.name, job_id)
    assert sorted(found) == [
        ("drift-report.yaml", "drift"),
        ("pipeline-sweeper.yaml", "sweep"),
        ("training-data-pipeline.yaml", "train"),
    ]
