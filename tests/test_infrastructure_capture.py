"""Capture in the cluster: the model's pods keep photos in their node's spool, and the node sends them
on to the S3 inbox (infrastructure/scripts/capture.sh installs it, capture-upload.sh does it), so no
pod holds cloud credentials.

capture-upload.sh runs here against a fake `aws` that keeps the bucket in a folder and honours
--no-follow-symlinks as the real one does; the spool the pods write is filled by the service's own
capture code (wms.serve.capture), and what the script reports back is read by that code's caps.
capture.sh runs against a fake `systemctl`; its alert goes through `promtool test rules`.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tests.test_infrastructure_monitoring import promtool_checks_the_stack_rules, stack_values
from tests.test_infrastructure_scripts import _executable

from wms.config import ServeSettings
from wms.serve.capture import UPSTREAM, Capture, Captured, Inbox
from wms.uncertainty import Assessment

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "infrastructure" / "scripts"
INBOX = "s3://b/wms/inbox"

# `aws s3 mv DIR/ s3://b/KEY/ --recursive` and `aws s3 ls s3://b/KEY/ --recursive` over the folder
# $BUCKET, as the AWS CLI does them: a link is skipped under --no-follow-symlinks, and a listing of
# a prefix that holds nothing fails saying nothing.
FAKE_AWS = r"""#!/usr/bin/env python3
import os, shutil, sys
from pathlib import Path

args = [a for i, a in enumerate(sys.argv[1:]) if a != "--region" and sys.argv[i] != "--region"]
with open(os.environ["AWS_CALLS"], "a") as calls:
    calls.write(" ".join(args) + "\n")
bucket = Path(os.environ["BUCKET"])
def where(url):
    assert url.startswith("s3://b/"), url
    return bucket / url[len("s3://b/"):]
if args[:2] == ["s3", "mv"]:
    if os.environ.get("AWS_FAIL"):
        sys.exit("upload failed: An error occurred (AccessDenied) when calling the PutObject operation")
    source, target = Path(args[2]), where(args[3])
    for path in sorted(source.iterdir()):
        if path.is_symlink() and "--no-follow-symlinks" in args:
            continue
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / path.name)
        path.unlink()
elif args[:2] == ["s3", "ls"]:
    prefix = where(args[2])
    found = sorted(p for p in prefix.rglob("*") if p.is_file()) if prefix.is_dir() else []
    if not found:
        sys.exit(1)
    for path in found:
        print(f"2026-12-07 10:00:00 {path.stat().st_size:>10} {path.relative_to(bucket)}")
else:
    sys.exit(f"fake aws: {args} is not expected")
"""

UNSURE = Assessment(score=0.9, entropy=0.8, uncertain_share=0.9, regions=0, verdict="check")


def _photo(seed: int) -> tuple[bytes, Image.Image]:
    """A distinct noise photo for each seed, the same for the same seed."""
    image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue(), image


class Node:
    """A serving node's spool, sending folder and textfile folder, and its bucket, under tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.spool, self.sending, self.bucket = tmp_path / "spool", tmp_path / "sending", tmp_path / "bucket"
        self.textfiles, self.calls = tmp_path / "textfile", tmp_path / "aws-calls"
        for folder in (self.spool, self.bucket, self.textfiles, tmp_path / "bin"):
            folder.mkdir()
        _executable(tmp_path / "bin" / "aws", FAKE_AWS)
        self.outcomes: list[str] = []
        self.restart_pod()

    def restart_pod(self) -> None:
        """A new pod on this node: it remembers none of the photos kept before."""
        settings = ServeSettings(capture="sample", capture_sample_rate=1.0, capture_dir=str(self.spool))
        self.pod = Capture(settings, "3", 0.5, count=self.outcomes.append)

    def keep(self, seed: int) -> str:
        """The pod keeps a photo (as the service does after a prediction); returns its id."""
        upload, image = _photo(seed)
        self.pod.write(Captured(upload, image, b"mask", UNSURE, 0.1, "sample"))
        assert self.outcomes[-1] == "written"
        return next(iter(reversed(self.pod.taken)))

    def upload(self, fail: bool = False) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{self.tmp / 'bin'}:/usr/bin:/bin",
            "AWS_CALLS": str(self.calls),
            "BUCKET": str(self.bucket),
            "AWS_REGION": "eu-central-1",
            "CAPTURE_INBOX": INBOX,
            "CAPTURE_SPOOL": str(self.spool),
            "CAPTURE_SENDING": str(self.sending),
            "TEXTFILE_DIR": str(self.textfiles),
            **({"AWS_FAIL": "1"} if fail else {}),
        }
        return subprocess.run(
            ["bash", str(SCRIPTS / "capture-upload.sh")], env=env, capture_output=True, text=True, timeout=60
        )

    def in_inbox(self, kind: str) -> set[str]:
        folder = self.bucket / "wms" / "inbox" / kind
        return {p.stem for p in folder.iterdir()} if folder.is_dir() else set()

    def gauge(self) -> str:
        return (self.textfiles / "wms_capture_upload.prom").read_text().splitlines()[0]


def _age(path: Path, minutes: float) -> None:
    then = path.lstat().st_mtime - minutes * 60
    os.utime(path, (then, then), follow_symlinks=False)


def test_complete_captures_reach_the_inbox_metadata_last_and_the_pods_caps_count_them(tmp_path: Path) -> None:
    node = Node(tmp_path)
    kept = {node.keep(seed) for seed in range(2)}
    (node.spool / "images").joinpath("0123456789abcdef.jpg").write_bytes(b"being written")  # no meta yet
    stale = node.spool / "images" / "fedcba9876543210.jpg"
    stale.write_bytes(b"a pod stopped while it wrote this")
    _age(stale, 11)
    done = node.upload()
    assert done.returncode == 0, done.stderr
    assert "sent 2 photo(s) to s3://b/wms/inbox" in done.stdout
    assert node.in_inbox("images") == node.in_inbox("masks") == node.in_inbox("meta") == kept
    moves = [line.split()[2:4] for line in node.calls.read_text().splitlines() if line.startswith("s3 mv")]
    assert [target.rsplit("/", 2)[1] for _, target in moves] == ["images", "masks", "meta"]  # meta last
    assert {p.name for p in (node.spool / "images").iterdir()} == {"0123456789abcdef.jpg"}  # fresh: waits
    report = json.loads((node.spool / UPSTREAM).read_text())
    sizes = sum(p.stat().st_size for p in (node.bucket / "wms" / "inbox").rglob("*") if p.is_file())
    assert (report["inbox"], report["photos"], report["bytes"]) == (INBOX, 2, sizes)
    assert stat.S_IMODE((node.spool / UPSTREAM).stat().st_mode) == 0o644  # the pods' user reads it
    assert node.gauge() == "wms_capture_upload_ok 1"
    # The pod's caps count the S3 inbox and what waits in the spool.
    assert Inbox(str(node.spool)).usage() == (2, sizes + len(b"being written"))


def test_while_s3_refuses_nothing_is_lost_and_the_pods_go_on_counting_it(tmp_path: Path) -> None:
    node = Node(tmp_path)
    first = node.keep(0)
    done = node.upload(fail=True)
    assert done.returncode == 1 and "AccessDenied" in done.stderr
    assert node.gauge() == "wms_capture_upload_ok 0"
    assert (node.sending / "meta" / f"{first}.json").is_file()  # taken out of the spool, kept here
    second = node.keep(1)
    node.upload(fail=True)
    assert (node.spool / "meta" / f"{second}.json").is_file()  # waits in the spool: the caps count it
    assert Inbox(str(node.spool)).usage()[0] == 1
    done = node.upload()
    assert done.returncode == 0, done.stderr
    assert node.in_inbox("meta") == {first}  # what was sending goes first
    node.upload()
    assert node.in_inbox("meta") == {first, second} and node.gauge() == "wms_capture_upload_ok 1"
    assert json.loads((node.spool / UPSTREAM).read_text())["photos"] == 2


def test_a_photo_the_inbox_holds_is_not_sent_again_by_a_restarted_pod(tmp_path: Path) -> None:
    """A pod remembers the photos it kept only while it runs; sent again, a photo the inbox holds
    would restart the time S3 keeps it (capture_keep_days, what the users were told)."""
    node = Node(tmp_path)
    pid = node.keep(0)
    assert node.upload().returncode == 0
    meta = node.bucket / "wms" / "inbox" / "meta" / f"{pid}.json"
    first = meta.read_bytes()
    node.restart_pod()
    time.sleep(1.1)  # a later captured_at, were it written again
    assert node.keep(0) == pid  # kept again into the spool
    done = node.upload()
    assert done.returncode == 0, done.stderr
    assert f"dropped {pid}: the inbox holds that photo already" in done.stdout
    assert meta.read_bytes() == first and not list(node.spool.glob("*/*"))
    assert json.loads((node.spool / UPSTREAM).read_text())["photos"] == 1


def test_a_pod_cannot_make_the_node_send_or_overwrite_its_files(tmp_path: Path) -> None:
    """A pod may write anything into the spool, links included: the node, which runs as root, sends
    none of its own files and writes none through a link."""
    node = Node(tmp_path)
    secret = tmp_path / "node-secret"
    secret.write_text("the node's own file")
    pid = "00000000000000aa"
    for kind, suffix in (("images", ".jpg"), ("masks", ".png"), ("meta", ".json")):
        (node.spool / kind).mkdir()
        (node.spool / kind / f"{pid}{suffix}").symlink_to(secret)
    (node.spool / UPSTREAM).symlink_to(secret)
    done = node.upload()
    assert done.returncode == 0, done.stderr
    assert not list(node.bucket.rglob("*.*")) and secret.read_text() == "the node's own file"
    assert not (node.spool / UPSTREAM).is_symlink()
    for link in node.spool.glob("*/*"):
        _age(link, 11)
    node.upload()
    assert not list(node.spool.glob("*/*"))  # not a capture after 10 minutes: deleted
    assert secret.read_text() == "the node's own file"


def _install(tmp_path: Path, inbox: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _executable(bin_dir / "systemctl", '#!/bin/sh\necho "systemctl $*" >> "$CALLS"\n')
    calls = tmp_path / "calls"
    calls.unlink(missing_ok=True)
    env = {
        "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "CALLS": str(calls),
        "CAPTURE_INBOX": inbox,
        "SYSTEMD_DIR": str(tmp_path / "units"),
        "TEXTFILE_DIR": str(tmp_path),
    }
    done = subprocess.run(
        ["bash", str(SCRIPTS / "capture.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done, calls.read_text().splitlines() if calls.exists() else []


def test_the_step_mounts_a_small_spool_only_the_pods_write_and_takes_it_away_when_capture_is_off(
    tmp_path: Path,
) -> None:
    done, calls = _install(tmp_path, INBOX)
    units = tmp_path / "units"
    mount = (units / "var-lib-wms-captures.mount").read_text()
    assert "Where=/var/lib/wms/captures\n" in mount and "Type=tmpfs\n" in mount
    assert "Options=size=64m,mode=0770,uid=10001,gid=10001,nosuid,nodev,noexec\n" in mount
    assert "WantedBy=local-fs.target" in mount  # mounted before k3s starts a pod on it
    service = (units / "wms-capture-upload.service").read_text()
    assert "ExecStart=/usr/local/lib/wms/capture-upload.sh\n" in service
    assert "EnvironmentFile=/etc/wms/bootstrap.env\n" in service  # CAPTURE_INBOX, AWS_REGION
    assert "OnUnitActiveSec=1min\n" in (units / "wms-capture-upload.timer").read_text()
    flush = (units / "wms-capture-flush.service").read_text()  # the spool is memory: sent as the node stops
    assert "ExecStop=/usr/local/lib/wms/capture-upload.sh\n" in flush and "RemainAfterExit=yes\n" in flush
    assert "Before=k3s.service\n" in flush  # stopped once k3s has, before the network and the spool go
    assert "After=network-online.target var-lib-wms-captures.mount\n" in flush
    enabled = "var-lib-wms-captures.mount wms-capture-upload.timer wms-capture-flush.service"
    assert calls == ["systemctl daemon-reload", f"systemctl enable --now {enabled}"]
    assert f"go through /var/lib/wms/captures to {INBOX}" in done.stdout
    again, _ = _install(tmp_path, INBOX)
    assert "wrote" not in again.stdout  # a boot with it in place changes nothing
    (tmp_path / "wms_capture_upload.prom").write_text("wms_capture_upload_ok 1\n")
    off, calls = _install(tmp_path, "")
    assert not list(units.iterdir()) and not (tmp_path / "wms_capture_upload.prom").exists()
    assert "systemctl disable --now wms-capture-upload.timer" in calls
    assert "capture_inbox is off" in off.stdout
    _, calls = _install(tmp_path, "")
    assert calls == []  # nothing there, nothing done


def test_every_node_that_serves_mounts_the_spool_before_k3s_starts_a_pod() -> None:
    from tests.test_infrastructure import ROLES, Boot

    for (layout, role), template in ROLES.items():
        boot = Boot(template, capture_inbox=INBOX)
        if "k3s" in boot.steps:
            assert boot.steps.index("capture") < boot.steps.index("k3s"), layout
            assert boot.settings["CAPTURE_INBOX"] == INBOX
        else:
            assert "capture" not in boot.steps, (layout, role)


def test_promtool_says_someone_is_told_when_the_captures_stop_reaching_the_inbox(tmp_path: Path) -> None:
    promtool_checks_the_stack_rules("capture", ROOT / "tests" / "capture_alerts_test.yaml", tmp_path)
    rules = stack_values()["additionalPrometheusRulesMap"]["capture"]["groups"][0]["rules"]
    assert [rule["alert"] for rule in rules] == ["WmsCaptureUploadFailing"]
    script = (SCRIPTS / "capture-upload.sh").read_text()
    assert "textfile_dir=${TEXTFILE_DIR:-/var/lib/node-exporter/textfile}" in script  # node-exporter's
    assert "wms_capture_upload_ok" in rules[0]["expr"] and "wms_capture_upload_ok %s" in script
