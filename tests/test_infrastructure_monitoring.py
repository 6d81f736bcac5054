"""The serving node's monitoring: what `terraform apply` installs so that an alert reaches a person.

monitoring.sh (a bootstrap step of both layouts' serving node) puts infrastructure/k3s's
HelmChart in k3s's auto-deploying manifests folder, and k3s's Helm controller installs
kube-prometheus-stack from it; the model chart's ServiceMonitor and PrometheusRule
(infrastructure/helm-values.yaml) must carry the label its Prometheus selects, node-exporter
must read the folder `wms monitor drift` writes to, and Alertmanager must send to the webhook
that Terraform's alert_webhook_parameter names. The chart itself cannot be installed here (no
cluster, no chart repository): the manifests are read, the Alertmanager configuration goes
through `amtool check-config`, and monitoring.sh runs against a fake `k3s` and `aws`.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mlflow.server.security_utils import is_allowed_host_header
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import _free_port, wait_until_ready
from tests.deploy.test_chart import _merge
from tests.docs import all_docs
from tests.test_infrastructure import ROLES, Boot, delivered_text
from tests.test_infrastructure_scripts import _executable

ROOT = Path(__file__).resolve().parents[1]
K3S = ROOT / "infrastructure" / "k3s"
STACK = K3S / "kube-prometheus-stack.yaml"
RECEIVER = K3S / "alert-receiver.yaml"
MONITORING = ROOT / "infrastructure" / "scripts" / "monitoring.sh"
MLFLOW = ROOT / "infrastructure" / "scripts" / "mlflow.sh"
MLFLOW_ALERT_TESTS = ROOT / "tests" / "mlflow_alerts_test.yaml"
CLUSTER_VALUES = ROOT / "infrastructure" / "helm-values.yaml"
URL = "https://hooks.slack.com/services/T000/B000/fakefakefakefake"
SECRET_MOUNT = "/etc/alertmanager/secrets"  # where alertmanagerSpec.secrets are mounted


def stack() -> dict[str, Any]:
    return dict(yaml.safe_load(STACK.read_text()))


def stack_values() -> dict[str, Any]:
    """The values kube-prometheus-stack is installed with (the HelmChart's valuesContent)."""
    return dict(yaml.safe_load(stack()["spec"]["valuesContent"]))


def _textfile_dir() -> str:
    match = re.search(r"^textfile_dir=\$\{TEXTFILE_DIR:-(\S+)\}$", MONITORING.read_text(), re.M)
    assert match, "monitoring.sh names no textfile_dir"
    return match[1]


def test_every_node_that_runs_k3s_installs_the_pinned_stack() -> None:
    chart = stack()
    assert (chart["apiVersion"], chart["kind"]) == ("helm.cattle.io/v1", "HelmChart")
    assert chart["spec"]["chart"] == "kube-prometheus-stack"
    assert chart["spec"]["repo"] == "https://prometheus-community.github.io/helm-charts"
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(chart["spec"]["version"])), "pin the chart to one version"
    assert chart["spec"]["targetNamespace"] == "monitoring"
    for layout, role in ROLES:
        boot = Boot(ROLES[layout, role])
        if "k3s" in boot.steps:
            assert boot.steps.index("k3s") < boot.steps.index("monitoring") < boot.steps.index("runner"), (
                layout
            )
            assert boot.files["/usr/local/lib/wms/kube-prometheus-stack.yaml"] == delivered_text(STACK)
        else:
            assert "monitoring" not in boot.steps, (layout, role)
    script = MONITORING.read_text()
    assert "manifests=${K3S_MANIFESTS_DIR:-/var/lib/rancher/k3s/server/manifests}" in script
    assert 'put_file "$manifests/wms-monitoring.yaml"' in script


def test_node_exporter_reads_the_folder_monitor_drift_writes_to() -> None:
    """node-exporter's pod sees the node's / at /host/root (the subchart's hostRootFsMount)."""
    values = stack_values()
    assert values["nodeExporter"]["enabled"] is True
    args = values["prometheus-node-exporter"]["extraArgs"]
    textfile = [a.split("=", 1)[1] for a in args if a.startswith("--collector.textfile.directory=")]
    assert textfile == ["/host/root" + _textfile_dir()]
    # The docs tell the operator to set monitor.textfile_dir to that very folder.
    assert f'monitor.textfile_dir = "{_textfile_dir()}"' in all_docs()


def test_a_deploy_is_not_refused_while_the_operator_is_down() -> None:
    """The operator's admission webhook sees each PrometheusRule the model chart installs; the
    chart's policy values are Fail, Ignore and IgnoreOnInstallOnly (Fail on every upgrade)."""
    assert stack_values()["prometheusOperator"]["admissionWebhooks"]["failurePolicy"] == "Ignore"


def test_the_model_charts_monitors_carry_the_label_the_stack_selects() -> None:
    """kube-prometheus-stack's Prometheus selects ServiceMonitors and PrometheusRules labelled
    release=<its release name>, the HelmChart's name, unless the NilUsesHelmValues switches are off."""
    cluster = yaml.safe_load(CLUSTER_VALUES.read_text())
    spec = stack_values()["prometheus"]["prometheusSpec"]
    assert spec.get("serviceMonitorSelectorNilUsesHelmValues", True) is True
    assert spec.get("ruleSelectorNilUsesHelmValues", True) is True
    release = {"release": stack()["metadata"]["name"]}
    for part in ("serviceMonitor", "prometheusRule"):
        assert cluster[part]["enabled"] is True, part
        assert cluster[part]["labels"] == release, part
    # No Grafana on the node, so no dashboard ConfigMap for a sidecar that is not there.
    assert stack_values()["grafana"]["enabled"] is False and cluster["dashboard"]["enabled"] is False


def _alertmanager_config(receiver: bool) -> dict[str, Any]:
    values = stack_values()
    if receiver:
        values = _merge(values, yaml.safe_load(yaml.safe_load(RECEIVER.read_text())["spec"]["valuesContent"]))
    return dict(values["alertmanager"]["config"])


@pytest.mark.parametrize("receiver", [False, True], ids=["no receiver", "webhook"])
def test_amtool_accepts_the_alertmanager_configuration(receiver: bool, tmp_path: Path) -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (Debian package prometheus-alertmanager)")
    config = tmp_path / "alertmanager.yaml"
    config.write_text(yaml.safe_dump(_alertmanager_config(receiver)))
    checked = subprocess.run(
        [amtool, "check-config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_alert_without_a_namespace_has_a_title_without_empty_brackets(tmp_path: Path) -> None:
    """WmsMlflowDown watches MLflow outside the cluster: no namespace label, so no "()" in its title."""
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (Debian package prometheus-alertmanager)")
    receiver = next(r for r in _alertmanager_config(receiver=True)["receivers"] if r["name"] == "wms-webhook")
    title = receiver["slack_configs"][0]["title"]
    (tmp_path / "none.tmpl").write_text('{{ define "none" }}{{ end }}')
    # amtool renders with its example data: an alert whose labels hold no namespace.
    rendered = subprocess.run(
        [
            amtool,
            "template",
            "render",
            f"--template.glob={tmp_path / 'none.tmpl'}",
            f"--template.text={title}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.strip() and "()" not in rendered.stdout, rendered.stdout


def test_alerts_go_to_the_webhook_named_by_the_terraform_variable(terraform: dict[str, Any]) -> None:
    variable = terraform["variable"]["alert_webhook_parameter"]
    assert variable["default"] == ""  # none set: nobody is paged, and the docs say where to look
    assert "alert_webhook_parameter = var.alert_webhook_parameter" in terraform["locals"]["common_vars"]
    for template in ("serving", "single"):
        boot = Boot(template)
        assert boot.settings["ALERT_WEBHOOK_PARAMETER"] == "/wms/alerts/webhook-url", template
    # Routed to the receiver that reads the URL from the Secret monitoring.sh fills.
    config = _alertmanager_config(receiver=True)
    assert config["route"]["receiver"] == "wms-webhook"
    receiver = next(r for r in config["receivers"] if r["name"] == config["route"]["receiver"])
    secrets = yaml.safe_load(yaml.safe_load(RECEIVER.read_text())["spec"]["valuesContent"])
    assert secrets["alertmanager"]["alertmanagerSpec"]["secrets"] == ["wms-alert-webhook"]
    assert receiver["slack_configs"][0]["api_url_file"] == f"{SECRET_MOUNT}/wms-alert-webhook/url"
    # Without one, every alert stops at the "null" receiver (seen only through a port-forward).
    assert _alertmanager_config(receiver=False)["route"]["receiver"] == "null"


def _monitoring(tmp_path: Path, parameter: str, ssm: str | None) -> subprocess.CompletedProcess[str]:
    """monitoring.sh with a fake `k3s` (its kubectl records arguments and stdin) and `aws` (the
    SSM parameter's value, or a refusal when ssm is None)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "k3s.log"
    _executable(
        bin_dir / "k3s", f'#!/bin/sh\necho "ARGS $*" >> {log}\ncase "$*" in *" -f -"*) cat >> {log};; esac\n'
    )
    answer = (
        f"echo '{ssm}'" if ssm is not None else "echo 'An error occurred (ParameterNotFound)' >&2; exit 254"
    )
    _executable(bin_dir / "aws", f'#!/bin/sh\necho "$@" > {tmp_path}/aws-args\n{answer}\n')
    lib = tmp_path / "lib"
    lib.mkdir(exist_ok=True)
    for source in (MONITORING, MONITORING.with_name("lib.sh"), STACK, RECEIVER):
        shutil.copy(source, lib / source.name)
    (tmp_path / "manifests").mkdir(exist_ok=True)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "K3S_MANIFESTS_DIR": str(tmp_path / "manifests"),
        "TEXTFILE_DIR": str(tmp_path / "node-exporter" / "textfile"),
        "RUNNER_USER": subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip(),
        "AWS_REGION": "us-east-1",
        "ALERT_WEBHOOK_PARAMETER": parameter,
        "MLFLOW_PORT": "5123",
    }
    return subprocess.run(
        ["bash", str(lib / "monitoring.sh")], env=env, capture_output=True, text=True, timeout=60
    )


def test_monitoring_sh_puts_the_webhook_in_a_secret_and_routes_the_alerts_to_it(tmp_path: Path) -> None:
    ran = _monitoring(tmp_path, "/wms/alerts/webhook-url", URL)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    manifests = tmp_path / "manifests"
    assert (manifests / "wms-monitoring.yaml").read_text() == STACK.read_text().replace(
        "WMS_MLFLOW_PORT", "5123"
    )
    assert (manifests / "wms-alert-receiver.yaml").read_text() == RECEIVER.read_text()
    assert "--name /wms/alerts/webhook-url --with-decryption" in (tmp_path / "aws-args").read_text()
    log = (tmp_path / "k3s.log").read_text()
    assert base64.b64encode(URL.encode()).decode() in log  # the Secret, given on stdin
    assert not [line for line in log.splitlines() if line.startswith("ARGS") and "hooks.slack" in line]
    assert URL not in ran.stdout + ran.stderr
    assert (tmp_path / "node-exporter" / "textfile").is_dir()


def test_without_a_webhook_monitoring_sh_says_nobody_is_paged(tmp_path: Path) -> None:
    _monitoring(tmp_path, "/wms/alerts/webhook-url", URL)  # a receiver set up earlier ...
    ran = _monitoring(tmp_path, "", None)  # ... and the parameter removed from Terraform since
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "nobody is paged" in ran.stdout
    assert not (tmp_path / "manifests" / "wms-alert-receiver.yaml").exists()
    assert "delete helmchartconfig kube-prometheus-stack" in (tmp_path / "k3s.log").read_text()


def test_an_unreadable_parameter_is_one_line_and_the_bootstrap_goes_on(tmp_path: Path) -> None:
    ran = _monitoring(tmp_path, "/wms/alerts/webhook-url", None)
    assert ran.returncode == 0, ran.stdout + ran.stderr  # the runner step after it still runs
    said = [line for line in ran.stdout.splitlines() if "NOBODY IS PAGED" in line]
    assert len(said) == 1 and "/wms/alerts/webhook-url" in said[0] and "aws ssm put-parameter" in said[0]
    assert not (tmp_path / "manifests" / "wms-alert-receiver.yaml").exists()
    # A receiver an earlier boot set up outlives a parameter SSM could not give this time.
    assert _monitoring(tmp_path, "/wms/alerts/webhook-url", URL).returncode == 0
    assert _monitoring(tmp_path, "/wms/alerts/webhook-url", None).returncode == 0
    assert (tmp_path / "manifests" / "wms-alert-receiver.yaml").read_text() == RECEIVER.read_text()
    assert "delete" not in (tmp_path / "k3s.log").read_text()


def _relabel(target: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus's relabelling of one discovered target (replace and keep; anchored regexes)."""
    labels = dict(target)
    for rule in rules:
        value = ";".join(labels.get(name, "") for name in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        if rule.get("action", "replace") == "keep":
            if not match:
                return None
        elif match:
            replacement = re.sub(r"\$\{(\d+)\}", r"\\g<\1>", rule.get("replacement", "$1"))
            labels[rule["target_label"]] = match.expand(replacement)
    return labels


def _mlflow_unit() -> tuple[list[str], str]:
    """mlflow.service's ExecStart, as words, and the hosts the script lets MLflow answer."""
    script = MLFLOW.read_text()
    start = re.search(r"^ExecStart=(.*)$", script, re.M)
    hosts = re.search(r'^allowed_hosts="(.*)"$', script, re.M)
    assert start and hosts
    return start[1].split(), hosts[1]


def test_prometheus_scrapes_mlflow_at_the_nodes_address_and_port(tmp_path: Path) -> None:
    """MLflow runs beside k3s, not in it: Prometheus finds the node (k3s's server, the one node)
    and scrapes its private address at MLFLOW_PORT, which monitoring.sh puts in."""
    ran = _monitoring(tmp_path, "", None)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    installed = yaml.safe_load((tmp_path / "manifests" / "wms-monitoring.yaml").read_text())
    spec = yaml.safe_load(installed["spec"]["valuesContent"])["prometheus"]["prometheusSpec"]
    (job,) = [c for c in spec["additionalScrapeConfigs"] if c["job_name"] == "mlflow"]
    assert (
        job["kubernetes_sd_configs"] == [{"role": "node"}]
        and job.get("metrics_path", "/metrics") == "/metrics"
    )
    node = {
        "__address__": "172.31.5.9:10250",
        "__meta_kubernetes_node_label_node_role_kubernetes_io_control_plane": "true",
    }
    scraped = _relabel(node, job["relabel_configs"])
    assert scraped and scraped["__address__"] == "172.31.5.9:5123"
    assert _relabel({"__address__": "172.31.5.10:10250"}, job["relabel_configs"]) is None  # an agent
    # MLflow listens there, and answers that address (what Prometheus sends as Host).
    words, hosts = _mlflow_unit()
    assert (
        words[words.index("--host") + 1] == "0.0.0.0" and words[words.index("--port") + 1] == "$MLFLOW_PORT"
    )
    assert is_allowed_host_header(hosts.split(","), "172.31.5.9:5123")
    pins = dict(
        line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line
    )
    exporter = f"prometheus-flask-exporter=={pins['prometheus-flask-exporter']}"
    assert "--expose-prometheus" in words and exporter in MLFLOW.read_text()  # the version tested here


def test_mlflow_answers_the_name_the_runners_use_and_no_look_alike() -> None:
    """WMS_TRACKING_URI names the Elastic IP's DNS name (Terraform's mlflow_url_internal): MLflow
    must accept it as a Host header, in every region's form, or every job gets 403."""
    script = MLFLOW.read_text()
    block = script[
        script.index("\nallowed_hosts=") : script.index("\nif put_file /etc/systemd/system/mlflow.service")
    ]
    ran = subprocess.run(
        ["bash", "-c", block + '\necho "$allowed_hosts"'],
        env={"PATH": os.environ["PATH"], "PUBLIC_IP": "203.0.113.10"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ran.returncode == 0, ran.stderr
    hosts = ran.stdout.strip().split(",")
    for host in (
        "ec2-203-0-113-10.compute-1.amazonaws.com:5000",  # us-east-1
        "ec2-203-0-113-10.eu-central-1.compute.amazonaws.com:5000",
        "ec2-203-0-113-10.eu-central-1.compute.amazonaws.com",
        "203.0.113.10:5000",
        "172.31.5.9:5000",
    ):
        assert is_allowed_host_header(hosts, host), host
    for host in ("ec2-203-0-113-10.example.com:5000", "ec2-203-0-113-11.compute-1.amazonaws.com:5000"):
        assert not is_allowed_host_header(hosts, host), host


@pytest.mark.skipif(
    importlib.util.find_spec("prometheus_flask_exporter") is None,
    reason="prometheus-flask-exporter is not installed (make install-dev installs it)",
)
def test_mlflow_started_as_the_node_starts_it_serves_metrics_prometheus_reads(
    tmp_path: Path, empty_tracking_db: Path
) -> None:
    words, hosts = _mlflow_unit()
    port = _free_port()
    shutil.copyfile(empty_tracking_db, tmp_path / "mlflow.db")
    given = {
        "$venv/bin/mlflow": f"{sys.executable} -m mlflow",
        "sqlite:///$db": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "$MLFLOW_ARTIFACTS_URI": str(tmp_path / "artifacts"),
        "0.0.0.0": "127.0.0.1",  # a test listens on loopback only
        "$MLFLOW_PORT": str(port),
        "$allowed_hosts": hosts,
        "/run/mlflow/metrics": str(tmp_path / "metrics"),
    }
    args = " ".join(given.get(word, word) for word in words).split()
    assert not [word for word in args if "$" in word], args
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{url}/health", server, log, "mlflow server")
        answer = httpx.get(f"{url}/metrics", headers={"Host": f"172.31.5.9:{port}"}, timeout=30)
        assert answer.status_code == 200, answer.text[:300]
        names = {family.name for family in text_string_to_metric_families(answer.text)}
        assert "mlflow_exporter_info" in names, sorted(names)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _mlflow_rules() -> dict[str, Any]:
    return dict(stack_values()["additionalPrometheusRulesMap"]["mlflow"])


def promtool_checks_the_stack_rules(group: str, unit_tests: Path, tmp_path: Path) -> None:
    """`promtool check rules` on the stack's rule group `group` (additionalPrometheusRulesMap), then
    `promtool test rules` with `unit_tests`, which names it as `<group>.rules.yaml`."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; make validators)")
    rules = tmp_path / f"{group}.rules.yaml"
    rules.write_text(yaml.safe_dump(dict(stack_values()["additionalPrometheusRulesMap"][group])))
    shutil.copyfile(unit_tests, tmp_path / unit_tests.name)
    for args in (["check", "rules", rules.name], ["test", "rules", unit_tests.name]):
        done = subprocess.run([promtool, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_says_the_mlflow_alerts_fire_when_mlflow_stops_answering_or_its_backup_fails(
    tmp_path: Path,
) -> None:
    promtool_checks_the_stack_rules("mlflow", MLFLOW_ALERT_TESTS, tmp_path)
    rules = {r["alert"]: r for group in _mlflow_rules()["groups"] for r in group["rules"]}
    assert 'absent(up{job="mlflow"})' in rules["WmsMlflowDown"]["expr"]
    # mlflow-backup.service records each run's outcome as this gauge (mlflow-backup.sh --record).
    assert rules["WmsMlflowBackupFailed"]["expr"] == "wms_mlflow_backup_ok == 0"
    unit = MLFLOW.read_text()
    assert "ExecStopPost=+/usr/local/lib/wms/mlflow-backup.sh --record" in unit
    assert re.search(
        r"^\s+dir=\$\{TEXTFILE_DIR:-" + re.escape(_textfile_dir()) + "}$",
        (MLFLOW.parent / "mlflow-backup.sh").read_text(),
        re.M,
    )


GITHUB_ALERT_TESTS = ROOT / "tests" / "github_token_alerts_test.yaml"


def test_promtool_says_the_token_alert_fires_two_weeks_before_the_runner_token_expires(
    tmp_path: Path,
) -> None:
    promtool_checks_the_stack_rules("github", GITHUB_ALERT_TESTS, tmp_path)
    # runner-start.sh writes the gauge into the folder node-exporter reads.
    assert re.search(
        r"^gauge=\$\{TEXTFILE_DIR:-" + re.escape(_textfile_dir()) + "}$",
        (MONITORING.parent / "runner-start.sh").read_text(),
        re.M,
    )
