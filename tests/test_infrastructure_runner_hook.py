"""The self-hosted runners' pre-job script, runner-job-started.sh, against a fake GitHub REST API
that answers from a real git repository: a job whose workflow comes from a commit that changed
.github/ against main fails before any of its steps; main's workflows, and data branches that
change only data, run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.test_infrastructure_scripts import SCRIPTS, TOKEN, _executable, _need

INFRA = SCRIPTS.parent
REPOSITORY = "octo-org/water-meters"
HOOK = "/usr/local/lib/wms/runner-job-started.sh"


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """main with a workflow; data/ok adds a pair; data/evil also changes the workflow."""
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n  name = T\n  email = t@example.com\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    repo = tmp_path / "repo"
    _git(tmp_path, "init", "-q", "-b", "main", str(repo))
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "pipeline.yaml").write_text("runs-on: [self-hosted]\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "main")
    for branch, workflow in (("data/ok", None), ("data/evil", "steps: [{run: cat ~/.kube/config}]\n")):
        _git(repo, "switch", "-q", "-c", branch, "main")
        (repo / "data" / "incoming").mkdir(parents=True, exist_ok=True)
        (repo / "data" / "incoming" / "m1.png").write_bytes(b"png")
        if workflow:
            (repo / ".github" / "workflows" / "pipeline.yaml").write_text(workflow)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", branch)
    _git(repo, "switch", "-q", "main")
    return repo


@pytest.fixture
def github(repository: Path) -> Iterator[tuple[str, list[str]]]:
    """The three endpoints the script reads, answered from `repository`; yields (URL, paths asked)."""
    asked: list[str] = []

    class Handle(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            asked.append(path)
            body: Any = {"message": "Not Found"}
            status = 404
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                status, body = 401, {"message": "Bad credentials"}
            elif path == f"/repos/{REPOSITORY}":
                status, body = 200, {"default_branch": "main"}
            elif match := re.fullmatch(rf"/repos/{REPOSITORY}/compare/(\S+)\.\.\.(\S+)", path):
                base = _git(repository, "merge-base", match[1], match[2])
                status, body = 200, {"merge_base_commit": {"sha": base}}
            elif match := re.fullmatch(rf"/repos/{REPOSITORY}/git/trees/(\w+)", path):
                lines = _git(repository, "ls-tree", match[1]).splitlines()
                entries = [
                    dict(zip(("mode", "type", "sha"), meta.split(), strict=True), path=name)
                    for meta, name in (line.split("\t") for line in lines)
                ]
                status, body = 200, {"sha": match[1], "tree": entries}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()
    server.server_close()


def _hook(tmp_path: Path, api_url: str, sha: str) -> subprocess.CompletedProcess[str]:
    """The script as the runner starts it (`bash -e FILE`), with the job's and the runner's env."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _executable(bin_dir / "aws", f'#!/bin/sh\n[ "$1 $2" = "ssm get-parameter" ] && echo "{TOKEN}"\n')
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "RUNNER_API_URL": api_url,
        "RUNNER_TOKEN_PARAMETER": "/wms/github/runner-token",
        "AWS_REGION": "us-east-1",
        "GITHUB_REPOSITORY": REPOSITORY,
        "GITHUB_SHA": sha,
        "GITHUB_WORKFLOW_SHA": sha,
    }
    script = SCRIPTS / "runner-job-started.sh"
    return subprocess.run(
        ["bash", "-e", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(("ref", "runs"), [("main", True), ("data/ok", True), ("data/evil", False)])
def test_a_job_runs_only_with_mains_workflows(
    ref: str, runs: bool, tmp_path: Path, repository: Path, github: tuple[str, list[str]]
) -> None:
    _need("curl", "jq")
    url, asked = github
    sha = _git(repository, "rev-parse", ref)

    done = _hook(tmp_path, url, sha)

    assert (done.returncode == 0) is runs, done.stderr
    if not runs:
        assert f"::error::commit {sha[:12]} changes .github/ against main" in done.stderr
    assert f"/repos/{REPOSITORY}/git/trees/{sha}" in asked


def test_a_job_whose_workflow_cannot_be_checked_does_not_run(tmp_path: Path, repository: Path) -> None:
    """GitHub unreachable (or refusing the token): the job fails rather than run unchecked."""
    _need("curl", "jq")
    done = _hook(tmp_path, "http://127.0.0.1:9", _git(repository, "rev-parse", "main"))
    assert done.returncode != 0 and "::error::" in done.stderr


def test_every_runner_runs_the_script_before_each_job() -> None:
    """runner.sh names it in the runner's .env; each instance that runs a runner fetches it there."""
    runner = (SCRIPTS / "runner.sh").read_text()
    env_file = runner[runner.index('put_file "$dir/.env"') :].split("\nENV\n")[0]
    assert f"ACTIONS_RUNNER_HOOK_JOB_STARTED={HOOK}" in env_file.splitlines()
    assert "RUNNER_TOKEN_PARAMETER=$RUNNER_TOKEN_PARAMETER" in env_file
    from tests.test_infrastructure import ROLES, Boot

    for template in set(ROLES.values()):
        boot = Boot(template)
        if "runner" in boot.steps:
            assert HOOK in boot.files, template
