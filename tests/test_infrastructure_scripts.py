"""The instance scripts of infrastructure/scripts that can run here, run against fakes.

runner-start.sh talks to a fake GitHub REST API on loopback, with a fake `aws` that hands out
the token and a fake `run.sh` that records how it was started; mlflow-backup.sh snapshots a
real SQLite database with the real sqlite3 and "uploads" it through a fake `aws`, and
mlflow-restore.sh brings it back the same way, under a real `mlflow server`; bootstrap.sh
runs fake steps. What needs root and the cloud (apt, k3s, systemd) is checked statically in
test_infrastructure.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import running_mlflow_server
from tests.test_registry import logged_run

from wms.config import load_settings
from wms.production import move_production, reconcile
from wms.registry import MlflowRegistry

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


# `aws` as the MLflow scripts call it, over a folder that stands for the backup prefix: `s3 cp`
# keeps or fetches an object by its name, `s3api list-objects-v2` names the key when it is there
# (prints None like the CLI when it is not); AWS_FAIL makes every call fail with that message.
FAKE_AWS = """#!/bin/sh
echo "$@" >> "$AWS_CALLS"
if [ -n "${AWS_FAIL:-}" ]; then echo "$AWS_FAIL" >&2; exit 254; fi
case "$1 $2" in
  "s3api list-objects-v2")
    while [ $# -gt 0 ]; do [ "$1" = --prefix ] && key=$2; shift; done
    if [ -f "$BUCKET/$(basename "$key")" ]; then echo "$key"; else echo None; fi ;;
  "s3 cp")
    for arg; do source=$destination; destination=$arg; done
    case "$source" in s3://*) source=$BUCKET/$(basename "$source") ;; esac
    case "$destination" in s3://*) destination=$BUCKET/$(basename "$destination") ;; esac
    cp "$source" "$destination" ;;
esac
"""
BACKUP_URI = "s3://wms-data-example/wms/mlflow-backup/mlflow.db"


def _mlflow_script(tmp_path: Path, script: str, db: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run an MLflow script of the instance against the fake `aws` and the bucket tmp_path/bucket."""
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        _executable(bin_dir / "aws", FAKE_AWS)
    (tmp_path / "bucket").mkdir(exist_ok=True)
    base = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "AWS_CALLS": str(tmp_path / "aws-calls"),
        "BUCKET": str(tmp_path / "bucket"),
        "MLFLOW_DB": str(db),
        "MLFLOW_BACKUP_URI": BACKUP_URI,
        "AWS_REGION": "us-east-1",
    }
    return subprocess.run(
        ["bash", str(SCRIPTS / script)], env=base | env, capture_output=True, text=True, timeout=120
    )


class FakeGitHub:
    """The three runner endpoints runner-start.sh calls, recording every request."""

    def __init__(
        self,
        runners: list[dict[str, Any]],
        refuse_registration: bool = False,
        token_expiration: str | None = None,
        token_expired: bool = False,
    ) -> None:
        self.runners = runners
        self.refuse_registration = refuse_registration
        self.token_expiration = token_expiration  # GitHub-Authentication-Token-Expiration
        self.token_expired = token_expired
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
                if github.token_expired:
                    status, body = 401, {"message": "Bad credentials", "status": "401"}
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                if github.token_expiration and not github.token_expired:
                    self.send_header("GitHub-Authentication-Token-Expiration", github.token_expiration)
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


def _runner_start(tmp_path: Path, api_url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
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
        "TEXTFILE_DIR": str(tmp_path / "no-textfile-folder"),
    } | extra
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


def test_runner_start_says_when_its_token_expires_and_which_to_renew_once_it_has(
    tmp_path: Path, serve_github: Any
) -> None:
    _need("curl", "jq")
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    expires = datetime.now(UTC) + timedelta(days=10, hours=1)
    stamp = expires.strftime("%Y-%m-%d %H:%M:%S UTC")
    github = FakeGitHub(runners=[], token_expiration=stamp)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    soon = _runner_start(
        tmp_path / "soon", serve_github(github), TEXTFILE_DIR=str(textfile), TMPDIR=str(scratch)
    )
    assert soon.returncode == 0, soon.stderr
    assert not list(scratch.iterdir())  # the answers' headers are not left behind at each start
    assert f"the runner token in SSM /wms/github/runner-token expires on {stamp} (in 10 days)" in soon.stdout
    assert "expires in 10 days; before then, make a new one" in soon.stderr
    assert "aws ssm put-parameter --overwrite" in soon.stderr
    gauges = {
        (sample.name, sample.labels.get("token")): sample.value
        for family in text_string_to_metric_families((textfile / "wms_github_token.prom").read_text())
        for sample in family.samples
    }
    assert gauges == {("wms_github_token_expiry_seconds", "runner"): float(int(expires.timestamp()))}
    assert [p.name for p in textfile.iterdir()] == ["wms_github_token.prom"]

    # The token expired: one line says which and how to put in the next one; no runner starts.
    expired = _runner_start(tmp_path / "expired", serve_github(FakeGitHub(runners=[], token_expired=True)))
    assert expired.returncode != 0
    said = expired.stderr.splitlines()[-1]
    assert said.startswith("GitHub refused the runner token in SSM /wms/github/runner-token (401: expired")
    assert "aws ssm put-parameter --overwrite --region us-east-1" in said
    assert not (tmp_path / "expired" / "actions-runner" / "run-args").exists()


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


# `curl` as lib.sh's `download` calls it: writes RUNNER_TARBALL's bytes to the -o file, whatever
# the URL; `install` stands for the first step after the check, and stops there (the test runs
# as whoever runs it, never as the instance's root).
FAKE_CURL = """#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
printf '%s' "$RUNNER_TARBALL" > "$out"
"""
FAKE_INSTALL = '#!/bin/sh\necho "install $*" >> "$CALLS"\nexit 1\n'


def _runner_install(tmp_path: Path, tarball: str, sha256: str) -> subprocess.CompletedProcess[str]:
    """runner.sh with a fake download of `tarball` and RUNNER_SHA256=`sha256`, up to its install."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _executable(bin_dir / "curl", FAKE_CURL)
    _executable(bin_dir / "install", FAKE_INSTALL)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CALLS": str(tmp_path / "calls"),
        "TMPDIR": str(tmp_path),  # mktemp's folder, which a stopped install leaves behind
        "RUNNER_TARBALL": tarball,
        "RUNNER_VERSION": "2.328.0",
        "RUNNER_SHA256": sha256,
        "RUNNER_USER": "runner",
    }
    return subprocess.run(
        ["bash", str(SCRIPTS / "runner.sh")], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="no runner build here")
def test_the_runner_installs_only_a_tarball_with_the_sha256_terraform_gives(tmp_path: Path) -> None:
    tarball = "the runner release, as GitHub serves it"
    published = hashlib.sha256(tarball.encode()).hexdigest()
    calls = tmp_path / "calls"

    accepted = _runner_install(tmp_path, tarball, published)
    assert calls.read_text().startswith("install -d /opt/actions-runner"), accepted.stdout
    calls.unlink()

    refused = _runner_install(tmp_path, tarball + " and something else", published)
    assert refused.returncode == 1
    assert not calls.exists()  # nothing installed, nothing unpacked
    (line,) = [line for line in refused.stdout.splitlines() if "SHA-256" in line]
    assert f"expected {published}: not installed" in line and "(runner_sha256)" in line

    # No checksum to check it against: refused as well, never installed unchecked.
    unchecked = _runner_install(tmp_path, tarball, "")
    assert unchecked.returncode == 1 and not calls.exists()
    assert "no SHA-256 to check it against (runner_sha256): not installed" in unchecked.stdout


def _bootstrap(tmp_path: Path, steps: str, boot_files: str = "") -> subprocess.CompletedProcess[str]:
    """bootstrap.sh in tmp_path/lib with the settings and the /etc/wms/boot-files given, the
    bucket's boot/ prefix a folder (tmp_path/bucket) read through a fake `aws s3 cp`."""
    lib, bin_dir = tmp_path / "lib", tmp_path / "bin"
    for folder in (lib, bin_dir, tmp_path / "bucket"):
        folder.mkdir(exist_ok=True)
    shutil.copy(SCRIPTS / "bootstrap.sh", lib / "bootstrap.sh")
    _executable(
        bin_dir / "aws",
        '#!/bin/sh\necho "aws $*" >> "$LOG"\n'  # aws s3 cp --only-show-errors --region R s3://b/boot/SUM FILE
        'cp "$BUCKET/${6##*/}" "$7"\n',
    )
    (tmp_path / "bootstrap.env").write_text(
        f'BOOTSTRAP_ROLE="serving"\nBOOTSTRAP_STEPS="{steps}"\nK3S_VERSION="v1.31.12+k3s1"\n'
        'AWS_REGION="eu-central-1"\nBOOT_FILES_URI="s3://wms-data/wms/boot"\n'
    )
    (tmp_path / "boot-files").write_text(boot_files)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "WMS_ENV_FILE": str(tmp_path / "bootstrap.env"),
        "WMS_BOOT_FILES": str(tmp_path / "boot-files"),
        "LOG": str(tmp_path / "log"),
        "BUCKET": str(tmp_path / "bucket"),
    }
    return subprocess.run(
        ["bash", str(lib / "bootstrap.sh")], env=env, capture_output=True, text=True, timeout=60
    )


def test_bootstrap_runs_the_steps_in_order_and_stops_at_the_first_failure(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    for step in ("base", "k3s", "runner"):
        _executable(lib / f"{step}.sh", f'#!/bin/sh\necho "{step} $K3S_VERSION" >> "$LOG"\n')
    _executable(lib / "broken.sh", "#!/bin/sh\nexit 3\n")
    log = tmp_path / "log"
    assert _bootstrap(tmp_path, "base k3s runner").returncode == 0
    assert log.read_text().splitlines() == ["base v1.31.12+k3s1", "k3s v1.31.12+k3s1", "runner v1.31.12+k3s1"]
    log.unlink()
    assert _bootstrap(tmp_path, "base broken runner").returncode != 0
    assert log.read_text().splitlines() == ["base v1.31.12+k3s1"]


def test_bootstrap_fetches_the_scripts_the_user_data_names_and_runs_none_that_differs(tmp_path: Path) -> None:
    """The user data carries the sha256 of each script it does not carry (EC2 takes 16 KB): after
    `base` (the AWS CLI), the bootstrap fetches each from the bucket, once, and a file there that
    is not the one named stops the boot before anything of it runs."""
    lib, bucket, log = tmp_path / "lib", tmp_path / "bucket", tmp_path / "log"
    lib.mkdir()
    bucket.mkdir()
    _executable(lib / "base.sh", '#!/bin/sh\necho "base" >> "$LOG"\n')
    k3s = b'#!/bin/sh\necho "k3s $K3S_VERSION" >> "$LOG"\n'
    manifest = b"kind: HelmChart\n"
    sums = {
        name: hashlib.sha256(text).hexdigest() for name, text in (("k3s.sh", k3s), ("stack.yaml", manifest))
    }
    for name, text in (("k3s.sh", k3s), ("stack.yaml", manifest)):
        (bucket / sums[name]).write_bytes(text)
    listed = "".join(f"{sha}  {name}\n" for name, sha in sums.items())
    done = _bootstrap(tmp_path, "base k3s", listed)
    assert done.returncode == 0, done.stdout + done.stderr
    said = log.read_text().splitlines()
    assert said[0] == "base" and said[-1] == "k3s v1.31.12+k3s1"  # fetched after base, before k3s
    uri = f"s3://wms-data/wms/boot/{sums['k3s.sh']}"
    assert said[1] == f"aws s3 cp --only-show-errors --region eu-central-1 {uri} {lib}/.k3s.sh.part"
    assert (lib / "stack.yaml").read_bytes() == manifest
    assert stat.S_IMODE((lib / "stack.yaml").stat().st_mode) == 0o644
    assert stat.S_IMODE((lib / "k3s.sh").stat().st_mode) == 0o755
    log.unlink()
    assert _bootstrap(tmp_path, "base k3s", listed).returncode == 0
    assert "aws" not in log.read_text()  # already there: nothing fetched at a later boot
    log.unlink()
    (lib / "k3s.sh").unlink()
    (bucket / sums["k3s.sh"]).write_bytes(b"#!/bin/sh\necho tampered >> $LOG\n")
    refused = _bootstrap(tmp_path, "base k3s", listed)
    assert refused.returncode == 1
    assert f"s3://wms-data/wms/boot/{sums['k3s.sh']} is not the k3s.sh this user data names" in refused.stdout
    assert "tampered" not in log.read_text() and not (lib / "k3s.sh").exists()
    assert not list(lib.glob(".*.part"))


def test_mlflow_restore_brings_back_the_backup_and_never_starts_empty_over_one_it_cannot_read(
    tmp_path: Path,
) -> None:
    _need("sqlite3")
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    fake_mlflow = _executable(tmp_path / "mlflow", '#!/bin/sh\necho "$@" >> "$MLFLOW_CALLS"\n')
    calls = tmp_path / "mlflow-calls"
    db = tmp_path / "data" / "mlflow.db"
    db.parent.mkdir()

    def restore(**env: str) -> subprocess.CompletedProcess[str]:
        extra = {"MLFLOW_BIN": str(fake_mlflow), "MLFLOW_CALLS": str(calls)}
        return _mlflow_script(tmp_path, "mlflow-restore.sh", db, **extra, **env)

    # The first boot ever: no backup, so MLflow starts empty.
    first = restore()
    assert first.returncode == 0, first.stderr
    assert f"no backup at {BACKUP_URI}: MLflow starts with an empty database" in first.stdout
    assert not db.exists()

    with sqlite3.connect(bucket / "mlflow.db") as backup:
        backup.execute("CREATE TABLE registered_models (name TEXT)")
        backup.execute("INSERT INTO registered_models VALUES ('wms-model')")

    # A new node whose credentials are not there yet: it must not start empty over the backup.
    blind = restore(AWS_FAIL="Unable to locate credentials. You can configure credentials by running ...")
    assert blind.returncode != 0
    assert f"cannot tell whether {BACKUP_URI} holds a backup: Unable to locate credentials" in blind.stderr
    assert "MLflow is not started with an empty database" in blind.stderr
    assert not db.exists()

    restored = restore()
    assert restored.returncode == 0, restored.stderr
    assert f"restored {db} from {BACKUP_URI}" in restored.stdout
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT name FROM registered_models").fetchall() == [("wms-model",)]
    assert calls.read_text().split()[:2] == ["db", "upgrade"]  # the schema follows this MLflow
    assert sorted(p.name for p in db.parent.iterdir()) == ["mlflow.db"]

    # A database in place is left alone, whatever the bucket holds.
    (tmp_path / "aws-calls").unlink()
    assert restore().returncode == 0
    assert not (tmp_path / "aws-calls").exists()

    # A damaged backup is refused, not served.
    db.unlink()
    (bucket / "mlflow.db").write_bytes(b"SQLite format 3\x00" + b"\x17" * 4000)
    damaged = restore()
    assert damaged.returncode != 0
    assert "fails its integrity check" in damaged.stderr and "docs/recovery.md" in damaged.stderr
    assert not db.exists() and not list(db.parent.iterdir())


def test_a_lost_mlflow_database_comes_back_from_its_backup_with_production_and_previous(
    tmp_path: Path, project_dir: Path, empty_tracking_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need("sqlite3")
    data = tmp_path / "var-lib-mlflow"
    data.mkdir()
    db = data / "mlflow.db"
    shutil.copyfile(empty_tracking_db, db)
    artifacts = tmp_path / "bucket-mlflow"  # the artifacts are in S3: they outlive the disk
    pointers = project_dir / "models"
    with running_mlflow_server(db, artifacts) as url:
        monkeypatch.setenv("WMS_TRACKING__URI", url)
        registry = MlflowRegistry(load_settings(start=project_dir))
        for dice in (0.7, 0.8):
            version = registry.register(logged_run(registry, tmp_path, dice), {}).version
            move_production(registry, pointers, version, action="promote", reason="better", by="test")
        backup = _mlflow_script(tmp_path, "mlflow-backup.sh", db)
        assert backup.returncode == 0, backup.stderr

    db.unlink()  # the disk is lost; Terraform's new node boots without it
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    restore = _mlflow_script(tmp_path, "mlflow-restore.sh", db, MLFLOW_BIN=mlflow)
    assert restore.returncode == 0, restore.stderr

    with running_mlflow_server(db, artifacts) as url:
        monkeypatch.setenv("WMS_TRACKING__URI", url)
        registry = MlflowRegistry(load_settings(start=project_dir))
        production, previous = registry.production(), registry.previous()
        assert production is not None and production.version == "2"
        assert previous is not None and previous.version == "1"
        assert reconcile(registry, pointers).summary.endswith("as main says; nothing to move")
        with registry.fetched("production") as folder:  # its files, checked against their sha256
            assert (folder / "model.pt").read_bytes() == b"weights 0.8"


def test_mlflow_backup_copies_every_change_within_the_hour_and_nothing_when_quiet(tmp_path: Path) -> None:
    _need("sqlite3")
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE model_versions (name TEXT, version INTEGER)")
        connection.execute("INSERT INTO model_versions VALUES ('wms-model', 1)")
    calls = tmp_path / "aws-calls"

    def uploads() -> int:
        return len(calls.read_text().splitlines()) if calls.exists() else 0

    first = _mlflow_script(tmp_path, "mlflow-backup.sh", db)
    assert first.returncode == 0, first.stderr
    assert uploads() == 1
    quiet = _mlflow_script(tmp_path, "mlflow-backup.sh", db)  # the next hour, nothing written
    assert quiet.returncode == 0, quiet.stderr
    assert "has not changed since its last backup" in quiet.stdout and uploads() == 1

    with sqlite3.connect(db) as connection:  # a promotion registers version 2
        connection.execute("INSERT INTO model_versions VALUES ('wms-model', 2)")
    promoted = _mlflow_script(tmp_path, "mlflow-backup.sh", db)
    assert promoted.returncode == 0, promoted.stderr
    assert uploads() == 2
    with sqlite3.connect(tmp_path / "bucket" / "mlflow.db") as copy:
        assert copy.execute("SELECT max(version) FROM model_versions").fetchone() == (2,)


def test_a_database_deleted_under_the_running_server_fails_the_backup_loudly_and_pages(
    tmp_path: Path,
) -> None:
    """A database deleted under the running server: its writes fail from then on (SQLite refuses
    them), and what it registered since the last backup lives only in the deleted file it holds
    until it restarts. An hourly "nothing to back up" hid that until a restart lost it."""
    _need("sqlite3")
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE model_versions (name TEXT, version INTEGER)")
        connection.execute("INSERT INTO model_versions VALUES ('wms-model', 1)")
    assert _mlflow_script(tmp_path, "mlflow-backup.sh", db).returncode == 0
    server = sqlite3.connect(db)  # the server's open database, which someone then deletes
    try:
        with server:
            server.execute("INSERT INTO model_versions VALUES ('wms-model', 2)")  # promoted since
        db.unlink()

        lost = _mlflow_script(tmp_path, "mlflow-backup.sh", db)
        assert lost.returncode == 1
        assert f"THE MLFLOW DATABASE IS LOST: {db}" in lost.stderr
        assert "nothing to back up" not in lost.stdout
        # The line names the deleted file the server still holds, and how to save it.
        rescue = lost.stderr.split("save it with ")[1].split(" (docs/recovery.md")[0]
        rescued = subprocess.run(rescue.removeprefix("sudo "), shell=True, capture_output=True, timeout=60)
        assert rescued.returncode == 0, rescued.stderr
        with sqlite3.connect(f"{db}.rescued") as copy:
            assert copy.execute("SELECT max(version) FROM model_versions").fetchone() == (2,)
    finally:
        server.close()

    # mlflow-backup.service's ExecStopPost turns the failed run into the gauge the alert reads.
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    for result, ok in (("exit-code", 0.0), ("success", 1.0)):
        recorded = subprocess.run(
            ["bash", str(SCRIPTS / "mlflow-backup.sh"), "--record"],
            env={"PATH": os.environ["PATH"], "SERVICE_RESULT": result, "TEXTFILE_DIR": str(textfile)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert recorded.returncode == 0, recorded.stderr
        gauges = {
            sample.name: sample.value
            for family in text_string_to_metric_families((textfile / "wms_mlflow_backup.prom").read_text())
            for sample in family.samples
        }
        assert gauges["wms_mlflow_backup_ok"] == ok, result
