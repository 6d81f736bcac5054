"""The cluster's certificates on a node that is never restarted (the serving node of `split`).

k3s issues its leaf certificates for 365 days and renews them only as it starts, those within
90 days of expiry; the admin kubeconfig, and the runner's copy of it, hold a client certificate
that expires with them. k3s-certs.sh (wms-k3s-certs.timer, daily) restarts k3s in that window,
copies the renewed kubeconfig to the runner's jobs and writes the earliest expiry for
node-exporter, which WmsK3sCertificatesExpiring watches. It runs here on certificates made by
the real `openssl` with short lifetimes, against a fake `systemctl` (whose restart of k3s
"renews" them as k3s would, or not), `k3s` and `getent`.
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.test_infrastructure import ROLES, Boot, delivered_text
from tests.test_infrastructure_monitoring import promtool_checks_the_stack_rules, stack_values
from tests.test_infrastructure_scripts import _executable

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "infrastructure" / "scripts"
CERTS = SCRIPTS / "k3s-certs.sh"
ALERT_TESTS = ROOT / "tests" / "k3s_alerts_test.yaml"
DAY = 86400


def _certificate(folder: Path, name: str, days: int) -> str:
    """A self-signed certificate valid for `days` days, in PEM."""
    key, pem = folder / f"{name}.key", folder / f"{name}.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-keyout", str(key), "-out", str(pem), "-days", str(days), "-subj", f"/CN={name}"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return pem.read_text()


def _kubeconfig(cert: str) -> str:
    data = base64.b64encode(cert.encode()).decode()
    return (
        "apiVersion: v1\nkind: Config\nusers:\n- name: default\n  user:\n"
        f"    client-certificate-data: {data}\n    client-key-data: a2V5\n"
    )


class Node:
    """A k3s data folder, its kubeconfig, the runner's home and node-exporter's textfile folder."""

    def __init__(self, tmp_path: Path, days: int, renews_to: int | None) -> None:
        self.root = tmp_path
        made = tmp_path / "made"
        made.mkdir()
        self.data = tmp_path / "k3s"
        (self.data / "server" / "tls").mkdir(parents=True)
        (self.data / "agent").mkdir()
        self.kubeconfig = tmp_path / "k3s.yaml"
        self.home = tmp_path / "home"
        self.textfile = tmp_path / "textfile"
        self.textfile.mkdir()
        self.log = tmp_path / "calls.log"
        ca = _certificate(made, "k3s-client-ca", 3650)
        admin = _certificate(made, "client-admin", days)
        (self.data / "server" / "tls" / "client-ca.crt").write_text(ca)
        # k3s's leaf files hold the leaf first, then its CA.
        (self.data / "server" / "tls" / "client-admin.crt").write_text(admin + ca)
        (self.data / "agent" / "serving-kubelet.crt").write_text(_certificate(made, "kubelet", days + 1))
        self.kubeconfig.write_text(_kubeconfig(admin))
        self.expires = int(time.time()) + days * DAY
        renew = ":\n"
        if renews_to is not None:  # what k3s does as it starts: new leaves, a new kubeconfig
            new = _certificate(made, "client-admin-new", renews_to)
            (made / "kubeconfig-new").write_text(_kubeconfig(new))
            (made / "admin-new").write_text(new + ca)
            renew = (
                f"cp {made / 'admin-new'} {self.data / 'server/tls/client-admin.crt'}\n"
                f"cp {made / 'client-admin-new.pem'} {self.data / 'agent/serving-kubelet.crt'}\n"
                f"cp {made / 'kubeconfig-new'} {self.kubeconfig}\n"
            )
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        _executable(
            bin_dir / "systemctl",
            f'#!/bin/sh\necho "systemctl $*" >> {self.log}\nif [ "$*" = "restart k3s" ]; then\n{renew}fi\n',
        )
        _executable(bin_dir / "k3s", f'#!/bin/sh\necho "k3s $*" >> {self.log}\n')
        # A deploy running on the node: pgrep finds it while `busy` holds a count, one less
        # each look; sleep only notes the wait.
        self.busy = tmp_path / "busy"
        _executable(
            bin_dir / "pgrep",
            f'#!/bin/sh\necho "pgrep $*" >> {self.log}\nn=$(cat {self.busy} 2>/dev/null || echo 0)\n'
            f'[ "$n" -gt 0 ] || exit 1\necho $((n - 1)) > {self.busy}\n',
        )
        _executable(bin_dir / "sleep", f'#!/bin/sh\necho "sleep $*" >> {self.log}\n')
        user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
        self.user = user
        _executable(bin_dir / "getent", f'#!/bin/sh\necho "{user}:x:1000:1000::{self.home}:/bin/bash"\n')
        self.path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"

    @property
    def copy(self) -> Path:
        return self.home / ".kube" / "config"

    def check(self, **env: str) -> subprocess.CompletedProcess[str]:
        lib = self.root / "lib"
        lib.mkdir(exist_ok=True)
        for source in (CERTS, SCRIPTS / "lib.sh"):
            shutil.copy(source, lib / source.name)
        env = {
            "PATH": self.path,
            "RUNNER_USER": self.user,
            "K3S_DATA_DIR": str(self.data),
            "K3S_KUBECONFIG": str(self.kubeconfig),
            "TEXTFILE_DIR": str(self.textfile),
            **env,
        }
        return subprocess.run(
            ["bash", str(lib / CERTS.name)], env=env, capture_output=True, text=True, timeout=120
        )

    def gauge(self) -> int:
        (line,) = (self.textfile / "wms_k3s_certs.prom").read_text().splitlines()
        name, value = line.split()
        assert name == "wms_k3s_certificate_expiry_timestamp_seconds"
        return int(value)

    def calls(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def test_certificates_within_90_days_are_renewed_and_the_jobs_get_the_new_kubeconfig(tmp_path: Path) -> None:
    node = Node(tmp_path, days=30, renews_to=365)
    ran = node.check()
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "systemctl restart k3s" in node.calls()
    assert "k3s kubectl get --raw /readyz" in node.calls()  # waited for the API to answer again
    assert "k3s renewed its certificates" in ran.stdout and "fetch your own copy" in ran.stdout
    assert node.copy.read_text() == node.kubeconfig.read_text()  # the renewed client certificate
    assert abs(node.gauge() - (time.time() + 365 * DAY)) < 2 * DAY


def test_certificates_far_from_expiry_are_left_alone_and_a_stale_copy_is_replaced(tmp_path: Path) -> None:
    """k3s restarted on its own (a crash) renews and rewrites its kubeconfig; the runner's copy
    the boot made still holds the old client certificate, which expires the same."""
    node = Node(tmp_path, days=200, renews_to=None)
    node.copy.parent.mkdir(parents=True)
    node.copy.write_text(_kubeconfig(_certificate(tmp_path, "old-admin", 20)))
    ran = node.check()
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "restart" not in node.calls()  # the model pods' API is not touched for nothing
    assert node.copy.read_text() == node.kubeconfig.read_text()
    assert stat.S_IMODE(node.copy.stat().st_mode) == 0o600
    assert abs(node.gauge() - node.expires) < 2 * DAY
    again = node.check()
    assert again.returncode == 0 and "wrote" not in again.stdout  # nothing changed, nothing written


def test_a_renewal_that_does_not_happen_is_a_failure_with_the_expiry_still_recorded(tmp_path: Path) -> None:
    node = Node(tmp_path, days=30, renews_to=None)
    ran = node.check()
    assert ran.returncode == 1
    (said,) = [line for line in ran.stdout.splitlines() if "K3S DID NOT RENEW" in line]
    assert "k3s certificate rotate" in said
    assert abs(node.gauge() - node.expires) < 2 * DAY  # what WmsK3sCertificatesExpiring reads


def test_the_restart_waits_for_a_running_deploy_to_end(tmp_path: Path) -> None:
    """The API away for a minute under `wms deploy` (helm --wait, the pods' wait, the smoke
    check) would fail it: the restart comes once the deploy has ended."""
    node = Node(tmp_path, days=30, renews_to=365)
    node.busy.write_text("3")  # the deploy is seen three times, then ends
    ran = node.check()
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "the k3s restart waits for it to end" in ran.stdout
    calls = node.calls().splitlines()
    assert calls.count("sleep 30") == 2  # seen once to say so, then twice in the wait
    assert calls.index("systemctl restart k3s") > max(i for i, c in enumerate(calls) if c == "sleep 30")
    assert "wms deploy" in calls[0]  # what it looks for
    assert "k3s renewed its certificates" in ran.stdout


def test_a_deploy_still_running_after_the_wait_leaves_the_restart_to_tomorrow(tmp_path: Path) -> None:
    node = Node(tmp_path, days=30, renews_to=365)
    node.busy.write_text("1000")
    ran = node.check(DEPLOY_WAIT_MINUTES="2")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "restart" not in node.calls()
    assert node.calls().count("sleep 30") == 4  # at most DEPLOY_WAIT_MINUTES
    (said,) = [line for line in ran.stdout.splitlines() if "a deploy still runs" in line]
    assert "tomorrow" in said
    assert abs(node.gauge() - node.expires) < 2 * DAY  # the alert still sees the expiry


def test_a_deploy_does_not_delay_a_check_that_renews_nothing(tmp_path: Path) -> None:
    node = Node(tmp_path, days=200, renews_to=None)
    node.busy.write_text("1000")
    assert node.check().returncode == 0
    assert "sleep" not in node.calls() and "restart" not in node.calls()


def test_every_node_with_k3s_checks_its_certificates_daily() -> None:
    script = (SCRIPTS / "k3s.sh").read_text()
    assert "OnCalendar=*-*-* 03:30:00 UTC" in script
    assert "ExecStart=/usr/local/lib/wms/k3s-certs.sh" in script
    assert "systemctl enable --now wms-k3s-certs.timer" in script
    for role in set(ROLES.values()):
        boot = Boot(role)
        if "k3s" in boot.steps:
            assert boot.files["/usr/local/lib/wms/k3s-certs.sh"] == delivered_text(CERTS), role


def _rules() -> dict[str, Any]:
    return dict(stack_values()["additionalPrometheusRulesMap"]["k3s"])


def test_promtool_says_the_alert_fires_when_the_certificates_were_not_renewed(tmp_path: Path) -> None:
    promtool_checks_the_stack_rules("k3s", ALERT_TESTS, tmp_path)
    (rule,) = [r for group in _rules()["groups"] for r in group["rules"]]
    assert "wms_k3s_certificate_expiry_timestamp_seconds" in rule["expr"]  # the gauge the script writes
    assert "wms_k3s_certificate_expiry_timestamp_seconds" in CERTS.read_text()
