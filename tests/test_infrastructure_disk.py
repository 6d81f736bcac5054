"""What a year of runs leaves on the machines' disks is bounded.

deploy-tools.sh runs against fakes (`docker`, `systemctl`, `helm`, `id`) and writes docker's
daemon.json into a temporary folder; the runners' environment and setup-wms are read as text;
the store's locks run on moto's S3 with versioning on, against the bucket's lifecycle rule.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.test_infrastructure_scripts import _executable

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "infrastructure" / "scripts"
HELM_VERSION = "v3.16.4"


def _deploy_tools(tmp_path: Path, daemon_json: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """deploy-tools.sh on a node where docker and helm are installed; what systemctl was asked."""
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed (the nodes have it; apt-get install jq)")
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        calls = tmp_path / "systemctl-calls"
        _executable(bin_dir / "systemctl", f'#!/bin/sh\necho "$*" >> {calls}\n')
        _executable(bin_dir / "docker", "#!/bin/sh\nexit 0\n")
        _executable(bin_dir / "helm", f"#!/bin/sh\necho {HELM_VERSION}\n")
        _executable(bin_dir / "id", "#!/bin/sh\necho runner docker\n")
        # install -o root -g root, as lib.sh's put_file writes, also where the tests run unprivileged
        real = shutil.which("install")
        _executable(
            bin_dir / "install",
            "#!/bin/bash\nargs=()\n"
            'while [ $# -gt 0 ]; do case $1 in -o|-g) shift 2;; *) args+=("$1"); shift;; esac; done\n'
            f'exec {real} "${{args[@]}}"\n',
        )
    (tmp_path / "systemctl-calls").write_text("")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "DOCKER_DAEMON_JSON": str(daemon_json),
        "RUNNER_USER": "runner",
        "HELM_VERSION": HELM_VERSION,
    }
    done = subprocess.run(
        ["bash", str(SCRIPTS / "deploy-tools.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    return done, (tmp_path / "systemctl-calls").read_text().splitlines()


def test_the_node_that_builds_images_keeps_dockers_build_cache_bounded(tmp_path: Path) -> None:
    """Each deploy leaves its build context and layers in docker's build cache; an engine whose
    daemon.json has no builder.gc never prunes it. The bootstrap turns the collection on, keeps
    what daemon.json already says (the NVIDIA runtime on the GPU instance) and restarts docker
    once, not at every boot."""
    daemon_json = tmp_path / "etc-docker" / "daemon.json"
    daemon_json.parent.mkdir()
    nvidia = {"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}
    daemon_json.write_text(json.dumps(nvidia))

    done, systemctl = _deploy_tools(tmp_path, daemon_json)
    assert done.returncode == 0, done.stdout + done.stderr
    settings = json.loads(daemon_json.read_text())
    assert settings["builder"]["gc"] == {"enabled": True, "defaultKeepStorage": "2GB"}
    assert settings["runtimes"] == nvidia["runtimes"]
    assert "restart docker" in systemctl

    again, systemctl = _deploy_tools(tmp_path, daemon_json)  # the next boot
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(daemon_json.read_text()) == settings
    assert "restart docker" not in systemctl


def test_a_daemon_json_that_is_not_json_stops_the_step_with_one_line(tmp_path: Path) -> None:
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text("{ broken")
    done, systemctl = _deploy_tools(tmp_path, daemon_json)
    assert done.returncode != 0
    assert f"{daemon_json} is not JSON" in done.stdout and "restart wms-bootstrap" in done.stdout
    assert daemon_json.read_text() == "{ broken" and "restart docker" not in systemctl


def _setup_python_cache(runner_environment: str, pip_cache: str = "true") -> str:
    """What setup-wms asks actions/setup-python to cache, on a runner of that kind (the
    expression evaluated as GitHub would: `&&` and `||` give their operands, as Python's do)."""
    action = yaml.safe_load((ROOT / ".github" / "actions" / "setup-wms" / "action.yaml").read_text())
    steps = action["runs"]["steps"]
    (step,) = [s for s in steps if str(s.get("uses", "")).startswith("actions/setup-python")]
    expression = step["with"]["cache"].removeprefix("${{").removesuffix("}}")
    python = (
        expression.replace("inputs.pip-cache", repr(pip_cache))
        .replace("runner.environment", repr(runner_environment))
        .replace("&&", " and ")
        .replace("||", " or ")
    )
    return str(eval(python))  # the repository's own expression, over two literals


def test_self_hosted_runners_keep_no_pip_cache() -> None:
    """The runners' Python (the tool cache) keeps what every job installed; pip's cache beside it
    would keep a copy of every wheel a change of the pins brings (torch's CPU build is about
    200 MB, its CUDA build with NVIDIA's libraries several GB), and pip never prunes it. So the
    runners' environment turns it off, and setup-wms asks setup-python for no pip cache there,
    whose `pip cache dir` fails once the cache is off."""
    runner = (SCRIPTS / "runner.sh").read_text()
    env_file = runner[runner.index('put_file "$dir/.env"') :].split("\nENV\n")[0]
    assert "PIP_NO_CACHE_DIR=1" in env_file.splitlines()
    assert 'rm -rf "$(getent passwd "$RUNNER_USER" | cut -d: -f6)/.cache/pip"' in runner  # what it held
    assert _setup_python_cache("self-hosted") == ""
    assert _setup_python_cache("github-hosted") == "pip"  # CI keeps GitHub's cache
    assert _setup_python_cache("github-hosted", pip_cache="false") == ""


def test_the_bucket_expires_the_delete_markers_the_store_locks_leave(
    s3_bucket: str, terraform: dict[str, Any]
) -> None:
    """On the versioned bucket every use of a store lock deletes the generation before it (two
    objects), and each deletion leaves a delete marker; S3 keeps a marker after the versions
    behind it expired unless the lifecycle rule also expires such markers."""
    import boto3
    import s3fs

    from wms.data.lease import lease

    s3 = boto3.client("s3")
    s3.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    for run in range(4):
        with lease(fs, f"{s3_bucket}/wms/store/pipeline.lock", owner=f"run {run}", wait_seconds=0):
            pass
    markers = s3.list_object_versions(Bucket=s3_bucket).get("DeleteMarkers", [])
    assert len(markers) == 6  # two for each use after the first, never fewer

    (rule,) = terraform["resource"]["aws_s3_bucket_lifecycle_configuration.data"]["rule"]
    assert rule["filter"] == [{}] and rule["status"] == "Enabled"
    assert rule["expiration"][0]["expired_object_delete_marker"] is True


def test_the_bootstrap_installs_python_packages_without_keeping_their_wheels() -> None:
    """MLflow's virtual environment is made again at every change of MLFLOW_VERSION; pip's cache in
    root's home would keep every version's wheels (MLflow's dependencies are a few hundred MB)."""
    installs = [
        (script.name, line.strip())
        for script in sorted(SCRIPTS.glob("*.sh"))
        for line in script.read_text().splitlines()
        if "pip install" in line and not line.lstrip().startswith("#")
    ]
    assert installs, "no script installs a Python package"
    for name, line in installs:
        assert "--no-cache-dir" in line, (name, line)
