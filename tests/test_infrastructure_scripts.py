"""The instance scripts of infrastructure/scripts that can run here, run against fakes.

runner-start.sh talks to a fake GitHub REST API on loopback, with a fake `aws` that hands out
the token and a fake `run.sh` that records how it was started; mlflow-backup.sh snapshots a
real SQLite database with the real sqlite3 and "uploads" it through a fake `aws`; bootstrap.sh
runs fake steps. What needs root and the cloud (apt, k3s, systemd) is checked statically in
test_infrastructure.py.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "infrastructure" / "scripts"
TOKEN = "github_pat_11FAKE0000000000000000_fakefakefakefakefakefakefakefake"
REPOSITORY = "octo-org/water-meters"


def _need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (the instances have it; apt-get install {tool})")


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


class FakeGitHub:
    """The three runner endpoints runner-start.sh calls, recording every request."""

    def __init__(self, runners: list[dict[str, Any]], refuse_registration: bool = False) -> None:
        self.runners = runners
        self.refuse_registration = refuse_registration
        self.requests: list[dict[str, Any]] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        github = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict[str, Any] | None = None) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                github.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "authorization": self.headers.get("Authorization"),
                        "body": json.loads(self.rfile.read(length)) if length else None,
                    }
                )
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer(200, {"total_count": len(github.runners), "runners": github.runners})

            def do_DELETE(self) -> None:
                self._answer(204)

            def do_POST(self) -> None:
                if github.refuse_registration:
                    self._answer(403, {"message": "Resource not accessible by personal access token"})
                else:
                    self._answer(201, {"runner": {"id": 99}, "encoded_jit_config": "ENCODED-JIT-CONFIG"})

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def serve_github() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(github: FakeGitHub) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), github.handler())
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _runner_start(tmp_path: Path, api_url: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(
        bin_dir / "aws",
        '#!/bin/sh\necho "$@" >> "$AWS_CALLS"\n'
        f'[ "$1 $2" = "ssm get-parameter" ] && echo "{TOKEN}"\nexit 0\n',
    )
    runner_dir = tmp_path / "actions-runner"
    runner_dir.mkdir()
    _executable(runner_dir / "run.sh", '#!/bin/sh\necho "$@" > run-args\nenv > run-env\n')
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "AWS_CALLS": str(tmp_path / "aws-calls"),
        "RUNNER_API_URL": api_url,
        "RUNNER_REPOSITORY": REPOSITORY,
        "RUNNER_NAME": "wms-k3s",
        "RUNNER_LABELS": "wms-gpu,wms-serve",
        "RUNNER_TOKEN_PARAMETER": "/wms/github/runner-token",
        "AWS_REGION": "us-east-1",
    }
    return subprocess.run(
        ["bash", str(SCRIPTS / "runner-start.sh")],
        cwd=runner_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_runner_start_registers_a_just_in_time_runner_with_the_token_from_ssm(
    tmp_path: Path, serve_github: Any
) -> None:
    _need("curl", "jq")
    github = FakeGitHub(
        runners=[
            {"id": 7, "name": "wms-k3s", "status": "offline"},  # left by a stop while it waited
            {"id": 8, "name": "wms-k3s", "status": "online"},
        ]
    )
    result = _runner_start(tmp_path, serve_github(github))
    assert result.returncode == 0, result.stderr

    aws_calls = (tmp_path / "aws-calls").read_text()
    read = "ssm get-parameter --region us-east-1 --name /wms/github/runner-token --with-decryption"
    assert read in aws_calls
    base = f"/repos/{REPOSITORY}/actions/runners"
    assert [(r["method"], r["path"]) for r in github.requests] == [
        ("GET", f"{base}?name=wms-k3s"),
        ("DELETE", f"{base}/7"),  # only the offline one
        ("POST", f"{base}/generate-jitconfig"),
    ]
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in github.requests)
    arch = "ARM64" if os.uname().machine == "aarch64" else "X64"
    assert github.requests[-1]["body"] == {
        "name": "wms-k3s",
        "runner_group_id": 1,
        "labels": ["self-hosted", "linux", arch, "wms-gpu", "wms-serve"],
        "work_folder": "_work",
    }
    runner_dir = tmp_path / "actions-runner"
    assert (runner_dir / "run-args").read_text().split() == ["--jitconfig", "ENCODED-JIT-CONFIG"]
    # The token reaches neither the runner (nor so its jobs) nor the log.
    assert TOKEN not in (runner_dir / "run-env").read_text()
    assert TOKEN not in result.stdout + result.stderr


def test_runner_start_says_why_github_refused_and_starts_nothing(tmp_path: Path, serve_github: Any) -> None:
    _need("curl", "jq")
    github = FakeGitHub(runners=[], refuse_registration=True)
    result = _runner_start(tmp_path, serve_github(github))
    assert result.returncode != 0
    assert "GitHub refused to register the runner wms-k3s" in result.stderr
    assert "Resource not accessible by personal access token" in result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert not (tmp_path / "actions-runner" / "run-args").exists()


def test_mlflow_backup_uploads_a_consistent_snapshot(tmp_path: Path) -> None:
    _need("sqlite3")
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE experiments (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO experiments (name) VALUES ('wms')")
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # `aws s3 cp ... SOURCE DESTINATION`: keeps the source as bucket/<destination's name>.
    _executable(
        bin_dir / "aws",
        '#!/bin/sh\necho "$@" >> "$AWS_CALLS"\nfor arg; do source=$destination; destination=$arg; done\n'
        'cp "$source" "$BUCKET/$(basename "$destination")"\n',
    )
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "AWS_CALLS": str(tmp_path / "aws-calls"),
        "BUCKET": str(bucket),
        "MLFLOW_DB": str(db),
        "MLFLOW_BACKUP_URI": "s3://wms-data-example/wms/mlflow-backup/mlflow.db",
        "AWS_REGION": "us-east-1",
    }
    result = subprocess.run(
        ["bash", str(SCRIPTS / "mlflow-backup.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "s3 cp --only-show-errors --region us-east-1" in (tmp_path / "aws-calls").read_text()
    with sqlite3.connect(bucket / "mlflow.db") as copy:
        assert copy.execute("SELECT name FROM experiments").fetchall() == [("wms",)]

    missing = subprocess.run(
        ["bash", str(SCRIPTS / "mlflow-backup.sh")],
        env={**env, "MLFLOW_DB": str(tmp_path / "none.db")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 0 and "nothing to back up" in missing.stdout


def test_bootstrap_runs_the_steps_in_order_and_stops_at_the_first_failure(tmp_path: Path) -> None:
    shutil.copy(SCRIPTS / "bootstrap.sh", tmp_path / "bootstrap.sh")
    for step in ("base", "k3s", "runner"):
        _executable(tmp_path / f"{step}.sh", f'#!/bin/sh\necho "{step} $K3S_VERSION" >> "$LOG"\n')
    _executable(tmp_path / "broken.sh", "#!/bin/sh\nexit 3\n")
    env_file = tmp_path / "bootstrap.env"
    log = tmp_path / "log"

    def bootstrap(steps: str) -> subprocess.CompletedProcess[str]:
        env_file.write_text(
            f'BOOTSTRAP_ROLE="serving"\nBOOTSTRAP_STEPS="{steps}"\nK3S_VERSION="v1.31.12+k3s1"\n'
        )
        env = {**os.environ, "WMS_ENV_FILE": str(env_file), "LOG": str(log)}
        return subprocess.run(
            ["bash", str(tmp_path / "bootstrap.sh")], env=env, capture_output=True, text=True, timeout=60
        )

    assert bootstrap("base k3s runner").returncode == 0
    assert log.read_text().splitlines() == ["base v1.31.12+k3s1", "k3s v1.31.12+k3s1", "runner v1.31.12+k3s1"]
    log.unlink()
    assert bootstrap("base broken runner").returncode != 0
    assert log.read_text().splitlines() == ["base v1.31.12+k3s1"]
