"""The instance's region reaches every SSH session: base.sh run against fakes of what it installs.

`wms compute ssh`, `wms compute exec` and a training started over SSH get their environment from
/etc/environment (PAM's pam_env), not from the bootstrap's settings file; boto3 and the AWS CLI
then need AWS_DEFAULT_REGION for any EC2 or SSM call.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.test_infrastructure_scripts import SCRIPTS, _executable


def _base(tmp_path: Path, environment: Path, region: str) -> subprocess.CompletedProcess[str]:
    """base.sh with every package installed already, `aws` present and no swap."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _executable(bin_dir / "dpkg-query", "#!/bin/sh\necho 'install ok installed'\n")
    _executable(bin_dir / "aws", "#!/bin/sh\nexit 0\n")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "APT_PACKAGES": "curl jq",
        "RUNNER_USER": "root",
        "SWAP_GB": "0",
        "AWS_REGION": region,
        "ENVIRONMENT_FILE": str(environment),
    }
    return subprocess.run(
        ["bash", str(SCRIPTS / "base.sh")], env=env, capture_output=True, text=True, timeout=60
    )


def _session_region(environment: Path) -> str:
    """The region boto3 finds in a session whose environment is `environment`, as pam_env sets it."""
    pairs = dict(line.split("=", 1) for line in environment.read_text().splitlines() if "=" in line)
    code = "import boto3; print(boto3.session.Session().region_name)"
    home = environment.parent  # no ~/.aws/config to fall back on
    env = {**pairs, "HOME": str(home), "PATH": os.environ["PATH"]}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_every_ssh_session_on_an_instance_has_its_region(tmp_path: Path) -> None:
    environment = tmp_path / "environment"
    environment.write_text('PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"\n')
    assert _session_region(environment) == "None"  # what a session found before

    first = _base(tmp_path, environment, "eu-central-1")
    assert first.returncode == 0, first.stderr
    assert _session_region(environment) == "eu-central-1"
    assert environment.read_text().startswith('PATH="/usr/local/sbin')  # the image's own lines stay

    # The bootstrap runs at every boot, and a region changed in Terraform replaces the old one.
    for region in ("eu-central-1", "us-west-2"):
        assert _base(tmp_path, environment, region).returncode == 0
    lines = environment.read_text().splitlines()
    assert [line for line in lines if "REGION" in line] == [
        "AWS_REGION=us-west-2",
        "AWS_DEFAULT_REGION=us-west-2",
    ]
    assert _session_region(environment) == "us-west-2"
