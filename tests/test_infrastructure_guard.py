"""The GPU instance stops itself once its leases ran out, whether or not GitHub runs the reaper.

lease-guard.sh runs here against a fake `aws` (the instance's tags), a fake `curl` (the
instance metadata service) and a fake `systemctl` that records the poweroff it is asked for;
the boot files and the instance role that install and allow it are read as in
test_infrastructure.py.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.test_infrastructure import ROLES, SCRIPTS, Boot
from tests.test_terraform import _statements

INSTANCE_ID = "i-0123456789abcdef0"


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _iso(minutes_from_now: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes_from_now)).isoformat(timespec="seconds")


def _guard(
    tmp_path: Path, tags: dict[str, str] | None, bootstrap: str = "active"
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run lease-guard.sh on an instance with `tags` (None: EC2 refuses) whose bootstrap unit is
    in state `bootstrap`; what it printed, and the poweroff it asked systemctl for."""
    for tool in ("jq", "date"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (the instance has it)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    answer = (
        "echo 'An error occurred (UnauthorizedOperation)' >&2; exit 254"
        if tags is None
        else f"cat <<'JSON'\n{json.dumps([{'Key': k, 'Value': v} for k, v in tags.items()])}\nJSON"
    )
    _executable(bin_dir / "aws", f'#!/bin/sh\necho "$@" >> "$CALLS"\n{answer}\n')
    _executable(
        bin_dir / "curl",
        '#!/bin/sh\ncase "$*" in\n  *api/token*) echo imds-token ;;\n'
        f"  *instance-id*) echo {INSTANCE_ID} ;;\nesac\n",
    )
    _executable(
        bin_dir / "systemctl",
        f'#!/bin/sh\ncase "$1" in show) echo {bootstrap} ;; *) echo "systemctl $*" >> "$CALLS" ;; esac\n',
    )
    calls = tmp_path / "calls"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CALLS": str(calls),
        "AWS_REGION": "us-east-1",
    }
    result = subprocess.run(
        ["bash", str(SCRIPTS / "lease-guard.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    made = calls.read_text().splitlines() if calls.exists() else []
    return result, [c for c in made if c.startswith("systemctl")]


def test_an_instance_whose_leases_ran_out_is_stopped_without_the_reaper(tmp_path: Path) -> None:
    result, stops = _guard(
        tmp_path,
        {
            "wms:managed": "true",
            "wms:lease-holders": "true",
            "wms:lease:gh-run-7": _iso(-45),
            "wms:lease:gh-run-7-pipeline": _iso(-30),
            "wms:lease-expires": _iso(-30),
        },
    )
    assert result.returncode == 0, result.stderr
    assert stops == ["systemctl poweroff"]
    assert "ran out" in result.stdout and INSTANCE_ID in result.stdout


def test_a_live_lease_keeps_it_running(tmp_path: Path) -> None:
    result, stops = _guard(
        tmp_path,
        {"wms:lease-holders": "true", "wms:lease:gh-run-7": _iso(-90), "wms:lease:manual": _iso(30)},
    )
    assert result.returncode == 0, result.stderr
    assert stops == []
    assert "left running" in result.stdout


def test_the_reaper_is_given_its_rounds_first(tmp_path: Path) -> None:
    result, stops = _guard(tmp_path, {"wms:lease-holders": "true", "wms:lease:gh-run-7": _iso(-5)})
    assert result.returncode == 0 and stops == []


def test_an_instance_started_with_no_lease_is_stopped(tmp_path: Path) -> None:
    result, stops = _guard(tmp_path, {"Name": "wms-k3s", "wms:managed": "true"})
    assert stops == ["systemctl poweroff"]
    assert "no lease" in result.stdout


@pytest.mark.parametrize(
    ("tags", "stopped"),
    [
        ({"wms:lease-expires": _iso(30)}, False),  # tagged by an older WMS: the summary is the lease
        ({"wms:lease-holders": "true", "wms:lease-expires": _iso(30)}, True),  # a summary left behind
    ],
)
def test_the_summary_tag_counts_as_wms_compute_reads_it(
    tmp_path: Path, tags: dict[str, str], stopped: bool
) -> None:
    _, stops = _guard(tmp_path, tags)
    assert stops == (["systemctl poweroff"] if stopped else [])


def test_a_first_boot_still_installing_is_not_cut_off(tmp_path: Path) -> None:
    result, stops = _guard(tmp_path, {"wms:managed": "true"}, bootstrap="activating")
    assert result.returncode == 0 and stops == []
    assert "bootstrap still runs" in result.stdout


def test_when_ec2_cannot_be_asked_nothing_is_stopped(tmp_path: Path) -> None:
    result, stops = _guard(tmp_path, None)
    assert result.returncode != 0 and stops == []
    assert f"cannot read the tags of {INSTANCE_ID}" in result.stderr


def test_every_gpu_instance_runs_the_guard_and_the_serving_node_does_not() -> None:
    for (_layout, role), template in ROLES.items():
        boot = Boot(template)
        enabled = ["systemctl", "enable", "--now", "wms-lease-guard.timer"] in boot.config["runcmd"]
        assert enabled == (role == "gpu"), template
        if role != "gpu":
            assert "lease-guard" not in boot.scripts, template
            continue
        assert "lease-guard" in boot.scripts, template
        unit = boot.files["/etc/systemd/system/wms-lease-guard.service"]
        assert "ExecStart=/usr/local/lib/wms/lease-guard.sh" in unit, template
        assert "EnvironmentFile=/etc/wms/bootstrap.env" in unit and boot.settings["AWS_REGION"], template
        timer = boot.files["/etc/systemd/system/wms-lease-guard.timer"]
        assert "OnUnitActiveSec=5min" in timer and "WantedBy=timers.target" in timer, template


def test_the_guards_poweroff_stops_the_instance_and_its_role_may_read_the_tags(
    terraform: dict[str, Any],
) -> None:
    gpu = terraform["resource"]["aws_instance.gpu"]
    assert gpu["instance_initiated_shutdown_behavior"] == "stop"  # a poweroff never terminates it
    reads = [s for s in _statements(terraform, "instance") if s["actions"] == ["ec2:DescribeTags"]]
    assert reads and "ec2:DescribeTags" not in str(_statements(terraform, "serving"))
