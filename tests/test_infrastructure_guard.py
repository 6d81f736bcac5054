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
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Ec2Box
from tests.test_infrastructure import ROLES, SCRIPTS, Boot
from tests.test_infrastructure_scripts import _executable
from tests.test_terraform import _statements

from wms.compute.ec2 import Ec2Compute
from wms.config import ComputeSettings
from wms.errors import BackendError
from wms.times import parse_time

INSTANCE_ID = "i-0123456789abcdef0"


def _iso(minutes_from_now: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes_from_now)).isoformat(timespec="seconds")


def _tags_answer(tags: dict[str, str] | None) -> str:
    """What the fake `aws ec2 describe-tags` prints (None: EC2 refuses)."""
    if tags is None:
        return "echo 'An error occurred (UnauthorizedOperation)' >&2; exit 254"
    return f"cat <<'JSON'\n{json.dumps([{'Key': k, 'Value': v} for k, v in tags.items()])}\nJSON"


def _guard(
    tmp_path: Path,
    tags: dict[str, str] | None,
    bootstrap: str = "active",
    after_mark: dict[str, str] | None = None,
    may_tag: bool = True,
    ask_again: bool = True,
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run lease-guard.sh on an instance with `tags` (None: EC2 refuses) whose bootstrap unit is
    in state `bootstrap`; what it printed, and the poweroff it asked systemctl for.

    `after_mark`: the tags once the guard has tagged it wms:stopping (a start leased it
    meanwhile); `may_tag`: whether its role may write that tag; `ask_again`: whether EC2 answers
    the look after the mark. Every call is in tmp_path/calls.
    """
    for tool in ("jq", "date"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (the instance has it)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tagging = "exit 0" if may_tag else "echo 'An error occurred (UnauthorizedOperation)' >&2; exit 254"
    _executable(
        bin_dir / "aws",
        f'#!/bin/sh\necho "$@" >> "$CALLS"\ncase "$2" in\n'
        f"  create-tags) {tagging} ;;\n"
        "  delete-tags) exit 0 ;;\n"
        "esac\n"
        f'if grep -q create-tags "$CALLS" && [ {"yes" if may_tag else "no"} = yes ]; then\n'
        f"{_tags_answer(after_mark if after_mark is not None else tags) if ask_again else _tags_answer(None)}"
        "\nfi\n"
        f"{_tags_answer(tags)}\n",
    )
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


EXPIRED = {"wms:managed": "true", "wms:lease-holders": "true", "wms:lease:gh-run-7": _iso(-45)}


def _settings(box: Ec2Box) -> ComputeSettings:
    return ComputeSettings(backend="ec2", instance_tag=box.tag, poll_seconds=0.02, stop_timeout_seconds=0.3)


def _aws_calls(tmp_path: Path) -> list[str]:
    return [c for c in (tmp_path / "calls").read_text().splitlines() if not c.startswith("systemctl")]


def test_a_start_that_leases_it_while_the_guard_decides_keeps_it_running(tmp_path: Path) -> None:
    """`wms compute start` by another run writes its lease just as the guard decides to stop:
    the guard's second look, after its wms:stopping mark, sees the lease and leaves it running."""
    leased = EXPIRED | {"wms:lease:gh-run-8": _iso(420), "wms:stopping": "lease-guard now"}
    result, stops = _guard(tmp_path, EXPIRED, after_mark=leased)
    assert result.returncode == 0, result.stderr
    assert stops == []
    assert "leased meanwhile" in result.stdout
    calls = _aws_calls(tmp_path)
    assert [c.split()[1] for c in calls] == ["describe-tags", "create-tags", "describe-tags", "delete-tags"]
    assert calls[-1].endswith("--tags Key=wms:stopping")


def test_the_guard_marks_the_instance_stopping_before_it_powers_off(tmp_path: Path) -> None:
    result, stops = _guard(tmp_path, EXPIRED)
    assert result.returncode == 0, result.stderr
    assert stops == ["systemctl poweroff"]
    calls = (tmp_path / "calls").read_text().splitlines()
    marked = next(i for i, c in enumerate(calls) if " create-tags " in c)
    assert marked < calls.index("systemctl poweroff")
    assert "describe-tags" in calls[marked + 1]  # the second look comes after the mark
    value = calls[marked].partition("Key=wms:stopping,Value=")[2]
    who, _, written = value.rpartition(" ")
    assert who == "lease-guard"
    moment = parse_time(written)  # read as `wms compute start` reads the mark
    assert moment is not None and abs(datetime.now(UTC) - moment) < timedelta(minutes=1)


def test_a_start_that_finds_the_guards_mark_waits_for_that_stop(tmp_path: Path, ec2_box: Ec2Box) -> None:
    """The mark as the guard writes it reads as a stop under way to `wms compute start` (moto)."""
    _guard(tmp_path, EXPIRED)
    value = _aws_calls(tmp_path)[1].partition("Key=wms:stopping,Value=")[2]
    ec2_box.client.start_instances(InstanceIds=[ec2_box.id])
    ec2_box.client.create_tags(Resources=[ec2_box.id], Tags=[{"Key": "wms:stopping", "Value": value}])
    cfg = _settings(ec2_box)
    with pytest.raises(BackendError, match="another caller's stop"):
        Ec2Compute(cfg, holder="gh-run-8").start()


def test_when_the_second_look_fails_the_guard_takes_its_mark_off_and_stops_nothing(tmp_path: Path) -> None:
    """A start may have leased it meanwhile; a mark left behind would hold that start back."""
    result, stops = _guard(tmp_path, EXPIRED, ask_again=False)
    assert result.returncode != 0 and stops == []
    assert [c.split()[1] for c in _aws_calls(tmp_path)] == [
        "describe-tags",
        "create-tags",
        "describe-tags",
        "delete-tags",
    ]


def test_a_role_that_may_not_tag_still_stops_an_unleased_instance(tmp_path: Path) -> None:
    """An instance whose role predates the mark (an older Terraform) is stopped as before."""
    result, stops = _guard(tmp_path, EXPIRED, may_tag=False)
    assert stops == ["systemctl poweroff"]
    assert "could not mark" in result.stderr


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
    (marks,) = [s for s in _statements(terraform, "instance") if "ec2:CreateTags" in s["actions"]]
    assert sorted(marks["actions"]) == ["ec2:CreateTags", "ec2:DeleteTags"]
    conditions = {c["variable"]: (c["test"], c["values"]) for c in marks["condition"]}
    assert conditions["aws:TagKeys"] == ("ForAllValues:StringEquals", ["wms:stopping"])  # no lease tag
    assert conditions["aws:ResourceTag/wms:managed"] == ("StringEquals", ["true"])  # not the serving node
    assert "ec2:CreateTags" not in str(_statements(terraform, "serving"))


def test_the_start_after_the_guards_poweroff_takes_its_mark_off(tmp_path: Path, ec2_box: Ec2Box) -> None:
    """The guard cannot take its mark off once it powered off; the next start does, so a second
    run's start a minute later is not held back waiting for a stop that ended."""
    _guard(tmp_path, EXPIRED)
    value = _aws_calls(tmp_path)[1].partition("Key=wms:stopping,Value=")[2]
    ec2_box.client.create_tags(Resources=[ec2_box.id], Tags=[{"Key": "wms:stopping", "Value": value}])
    cfg = _settings(ec2_box)
    assert Ec2Compute(cfg, holder="gh-run-8").start().state == "running"
    assert "wms:stopping" not in ec2_box.tags()
    assert Ec2Compute(cfg, holder="gh-run-9").start().state == "running"
