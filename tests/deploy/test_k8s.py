"""The k8s deploy against a fake cluster: fake docker/helm on PATH, ECR on moto, a fake Kubernetes API.

Everything the deploy does lands in one log, in order: the tools' arguments and the API calls.
The fake API proxies Service requests to a real `wms serve` app, so the health check and the
smoke prediction are real answers.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.deploy.conftest import OLD_NAMESPACES, REPO, FakeCluster

from wms.config import ServeSettings
from wms.serve.app import create_app
from wms.serve.model import ModelCard, load_folder


def _calls(cluster: FakeCluster) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cluster.log.read_text().splitlines()]


def _label(call: dict[str, Any]) -> str:
    if call["who"] == "k8s":
        return f"k8s {call['method']} {call['path'].split('?')[0]}"
    return f"{call['who']} {call['args'][0]}"


def test_the_seed_steps_run_in_order_and_old_namespaces_go(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any], tmp_path: Path
) -> None:
    root, cluster = cluster_project
    result = cli("deploy")
    assert result.exit_code == 0, result.output
    steps = re.findall(r"^\[(\d)/9\] (.*)$", result.output, re.M)
    assert [int(n) for n, _ in steps] == list(range(1, 10))
    assert "NOT MONITORED" not in result.output  # a cluster with the operator's CRDs
    assert [text.split()[0] for _, text in steps] == [
        "ECR",
        "built",
        "refreshed",
        "registry:",
        "helm",
        "pods",
        "health",
        "production",
        "removed",
    ]
    assert steps[7][1] == "production address svc/wms-model in namespace wms now serves model 1 (was nothing)"

    calls = _calls(cluster)
    assert [_label(c) for c in calls] == [
        "docker login",
        "docker build",
        "docker push",
        "docker image",
        "k8s POST /api/v1/namespaces",
        "k8s PUT /api/v1/namespaces/model-1/secrets/ecr-pull-secret",
        "k8s POST /api/v1/namespaces/model-1/secrets",
        "k8s POST /api/v1/namespaces",  # the production address's, whose pod pulls the same image
        "k8s PUT /api/v1/namespaces/wms/secrets/ecr-pull-secret",
        "k8s POST /api/v1/namespaces/wms/secrets",
        "helm status",
        "helm upgrade",
        "k8s PATCH /api/v1/namespaces/model-1",
        "k8s GET /api/v1/namespaces/model-1/pods",
        "k8s GET /api/v1/namespaces/model-1/services/wms-model:http/proxy/ready",
        "k8s POST /api/v1/namespaces/model-1/services/wms-model:http/proxy/predict",
        # only then the production address: what it served, the switch, and what it serves now
        "helm status",
        "k8s GET /api/v1/namespaces/wms/services/wms-model:http/proxy/ready",
        "helm upgrade",
        "k8s GET /api/v1/namespaces/wms/services/wms-model:http/proxy/ready",
        "k8s GET /api/v1/namespaces",
        "k8s DELETE /api/v1/namespaces/model-7",
        "k8s DELETE /api/v1/namespaces/model-9",
    ]
    login, build, push, forget, helm = calls[0], calls[1], calls[2], calls[3], calls[11]
    assert calls[15]["path"].endswith("/proxy/predict?capture=false")  # the smoke photo is never kept
    host = login["args"][-1]
    assert host.endswith(".amazonaws.com") and login["args"][:3] == ["login", "--username", "AWS"]
    image = build["args"][build["args"].index("-t") + 1]
    assert image.startswith(f"{host}/wms-model:v1-") and push["args"] == ["push", image]
    assert forget["args"] == ["image", "rm", image]  # every deploy's copy would stay on the node's disk
    assert helm["args"][:12] == [
        "upgrade", "--install", "wms-model", str(root / "devops/helm/wms-model"),
        "--namespace", "model-1", "--create-namespace", "--atomic", "--wait",
        "--timeout", "300s", "-f",
    ]  # fmt: skip
    assert helm["args"][12] == str(root / "infrastructure/helm-values.yaml")
    assert f"image.tag={image.rsplit(':', 1)[1]}" in helm["args"]
    assert helm["kubeconfig"] == str(tmp_path / "kubeconfig")  # the cluster the API calls reach
    # no models/production_current.json here yet: the alerts expect the version deployed
    assert helm["args"][-4:] == [
        "--set-string", "model.version=1", "--set-string", "monitoring.expectedModelVersion=1",
    ]  # fmt: skip

    entry = calls[18]
    repository, tag = image.rsplit(":", 1)
    assert entry["args"][:-4] == [
        "upgrade", "--install", "wms-model", str(root / "devops/helm/wms-entry"),
        "--namespace", "wms", "--create-namespace", "--atomic", "--wait", "--timeout", "300s",
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", "imagePullSecrets[0].name=ecr-pull-secret",
        "--set", "upstream.namespace=model-1", "--set", "upstream.service=wms-model",
        "--set-string", "upstream.version=1",
        # the model pods' deadlines (the chart's defaults here): the address must not cut first
        "--set", "serve.uploadTimeoutSeconds=180", "--set", "serve.headerTimeoutSeconds=10",
        "--set", "maxBodyMb=64",  # its proxy's body limit, never below the model's 20 MB uploads
    ]  # fmt: skip
    # watched as the model pods are: the cluster's Prometheus selects both by the same labels
    watched = entry["args"][-4:]
    assert watched[0::2] == ["--set-json", "--set-json"]
    selected = {"release": "kube-prometheus-stack"}  # infrastructure/helm-values.yaml's
    assert {k: json.loads(v) for k, v in (a.split("=", 1) for a in watched[1::2])} == {
        "serviceMonitor": {"enabled": True, "interval": "30s", "labels": selected},
        "prometheusRule": {"enabled": True, "errorRatio": 0.05, "labels": selected},
    }
    assert entry["kubeconfig"] == str(tmp_path / "kubeconfig")

    for namespace in ("model-1", "wms"):
        secret = cluster.secrets[(namespace, "ecr-pull-secret")]
        config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
        assert config["auths"][host]["password"] == login["stdin"]  # the token docker logged in with
    assert sorted(cluster.namespaces) == ["default", "kube-system", "model-1", "model-8", "wms"]
    assert cluster.labels["wms"] == {"app.kubernetes.io/managed-by": "wms"}  # no version: never cleaned up
    assert "/api/v1/namespaces/wms/services/wms-model:http/proxy/" in result.output  # where it serves
    context = root / ".wms/deploy/k8s-build"
    assert json.loads((context / "model/serving.json").read_text())["version"] == "1"
    assert (context / "docker/Dockerfile").is_file() and (context / "src/wms/serve/app.py").is_file()


def test_a_deploy_leaves_only_the_model_it_deployed_on_the_disk(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any]
) -> None:
    """Earlier deploys' staged models (a version each) and a fetch a killed deploy left go once the
    image is pushed: the image holds its own copy, and a rollback fetches its version again."""
    root, _ = cluster_project
    models = root / ".wms/deploy/models"
    for left in ("v0", ".v3.partial"):
        (models / left).mkdir(parents=True)
        (models / left / "model.onnx").write_bytes(b"\0" * 1024)
    result = cli("deploy")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in models.iterdir()) == ["v1"]
    assert (models / "v1" / "model.onnx").is_file()


def test_a_cluster_without_the_prometheus_operator_is_served_and_the_deploy_says_it_is_unwatched(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """kube-prometheus-stack failed to install: each chart leaves its ServiceMonitor and PrometheusRule
    out and its NOTES, which helm prints after the upgrade, say so; the deploy goes on and repeats it,
    for the model's release and for the production address."""
    notes = (REPO / "devops/helm/wms-model/templates/NOTES.txt").read_text()
    said = re.search(r"^NOT MONITORED: .*$", notes, re.M)
    assert said, "NOTES.txt has no NOT MONITORED line"
    line = re.sub(r"\{\{.*?\}\}", "ServiceMonitor or PrometheusRule", said[0])
    monkeypatch.setenv(
        "WMS_FAKE_HELM_NOTES", f"NOTES:\nwms-model 1 is installed in namespace model-1.\n{line}"
    )
    result = cli("deploy")
    assert result.exit_code == 0, result.output
    helm_step = re.search(r"^\[5/9\] (.*)$", result.output, re.M)
    assert helm_step and helm_step[1].startswith(
        "helm release wms-model installed in model-1; NOT MONITORED:"
    )
    assert (
        "no ServiceMonitor or PrometheusRule" in helm_step[1]
        and "install kube-prometheus-stack" in helm_step[1]
    )
    # the production address, installed on the same cluster, says the same of itself
    address_step = re.search(r"^\[8/9\] (.*)$", result.output, re.M)
    assert address_step and "now serves model 1 (was nothing); NOT MONITORED:" in address_step[1]
    assert re.search(r"^\[9/9\] removed old namespaces", result.output, re.M)  # served all the same


def test_the_serving_image_is_built_on_the_base_digest_the_settings_pin(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker pulls python:3.11-slim@<digest> and refuses content that differs from it; without the
    setting the Dockerfile's FROM is the tag alone, as before."""
    _, cluster = cluster_project

    def build_args() -> list[str]:
        calls = [c for c in _calls(cluster) if c["who"] == "docker" and c["args"][0] == "build"]
        return calls[-1]["args"]

    assert cli("deploy").exit_code == 0
    assert "--build-arg" not in build_args()
    digest = "sha256:" + "0123456789abcdef" * 4
    monkeypatch.setenv("WMS_DEPLOY__BASE_IMAGE_DIGEST", digest)
    result = cli("deploy")
    assert result.exit_code == 0, result.output
    args = build_args()
    assert args[args.index("--build-arg") + 1] == f"BASE_DIGEST=@{digest}"
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(r'^ARG BASE_DIGEST=""\nFROM python:3\.11-slim\$\{BASE_DIGEST\}$', dockerfile, re.M)

    monkeypatch.setenv("WMS_DEPLOY__BASE_IMAGE_DIGEST", "python:3.11-slim")
    result = cli("deploy")
    assert result.exit_code != 0
    (line,) = [x for x in result.output.splitlines() if "base_image_digest" in x]
    assert "bad setting deploy.base_image_digest='python:3.11-slim': write sha256: and the 64 hex" in line
    assert "Traceback" not in result.output


def test_a_local_image_docker_cannot_remove_is_a_note_not_a_failed_deploy(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WMS_FAKE_FAIL", "docker image rm")
    result = cli("deploy")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("[2/9] built and pushed"))
    assert line.endswith("; its local copy stays (`" + str(shutil.which("docker")) + " image rm` failed "
                         "with exit code 1: Error response from daemon: conflict)")  # fmt: skip


def test_a_service_answering_with_another_version_stops_before_cleanup(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any], exported_model: Path, live_server: Any
) -> None:
    _, cluster = cluster_project
    served = load_folder(
        exported_model, ModelCard(version="0", onnx_sha256=load_folder(exported_model).card.onnx_sha256)
    )
    with live_server(create_app(served, ServeSettings())) as wrong:
        cluster.upstream = wrong.url
        result = cli("deploy")
    assert result.exit_code == 1
    assert "serves model 0, not 1" in result.output and "Traceback" not in result.output
    assert not any(c.get("method") == "DELETE" for c in _calls(cluster))
    assert not any("wms" in c.get("args", []) for c in _calls(cluster))  # the address was not switched
    assert set(OLD_NAMESPACES) <= set(cluster.namespaces)


def test_a_release_that_never_became_ready_says_why_in_one_line(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """helm --atomic uninstalls the release, pods and their logs with it; the events stay and say why."""
    _, cluster = cluster_project
    atomic = (
        "Error: release wms-model failed, and has been uninstalled due to atomic being set: "
        "context deadline exceeded"
    )
    monkeypatch.setenv("WMS_FAKE_FAIL", f"helm:{atomic}")
    now = datetime.now(UTC)

    def event(kind: str, reason: str, message: str, minutes_ago: float) -> dict[str, Any]:
        stamp = (now - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")  # this deploy's: 0
        return {
            "metadata": {"name": f"{reason}.1", "namespace": "model-1"},
            "involvedObject": {"kind": "Pod", "name": "wms-model-6d5f-x2x"},
            "type": kind, "reason": reason, "message": message, "lastTimestamp": stamp,
        }  # fmt: skip

    cluster.events["model-1"] = [
        event("Warning", "BackOff", "Back-off restarting failed container (an hour-old install)", 70),
        event("Warning", "FailedScheduling", "0/1 nodes are available: 1 Insufficient cpu.\n", 0),
        event("Normal", "Scheduled", "Successfully assigned model-1/wms-model-6d5f-x2x", 0),
    ]
    result = cli("deploy")
    assert result.exit_code == 1 and "Traceback" not in result.output
    error = result.output.strip().splitlines()[-1]
    assert atomic in error
    assert (
        "its last warning: Pod wms-model-6d5f-x2x: FailedScheduling: 0/1 nodes are available: "
        "1 Insufficient cpu. (all: `kubectl -n model-1 get events`)"
    ) in error
    assert not any(c.get("method") == "DELETE" for c in _calls(cluster))  # nothing cleaned up

    cluster.events["model-1"] = []
    result = cli("deploy")
    assert result.output.strip().endswith("context deadline exceeded; see `kubectl -n model-1 get events`")


def test_an_evicted_pod_left_in_the_namespace_does_not_fail_the_deploy(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any]
) -> None:
    """An evicted pod stays listed as Failed until someone deletes it, and the old pod of a rolling
    update is listed while it terminates: neither will ever be ready, and neither serves."""
    _, cluster = cluster_project
    cluster.ended_pods = [
        {
            "metadata": {"name": "wms-model-old-evicted"},
            "status": {"phase": "Failed", "reason": "Evicted", "conditions": []},
        },
        {
            "metadata": {"name": "wms-model-old-stopping", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]},
        },
    ]
    result = cli("--set", "deploy.ready_timeout_seconds=3", "deploy")
    assert result.exit_code == 0, result.output
    assert "pods ready: wms-model-abc\n" in result.output


def test_dry_run_prints_the_plan_and_calls_nothing(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any]
) -> None:
    _, cluster = cluster_project
    result = cli("deploy", "--dry-run")
    assert result.exit_code == 0
    assert "helm upgrade --install wms-model" in result.output and "--namespace model-1" in result.output
    assert "and any deployed while main named another version, keeping the newest 2" in result.output
    assert _calls(cluster) == []
    missing = cli("deploy", "--dry-run", "--model", "7")
    assert missing.exit_code == 2 and missing.output.startswith("error: no model '7'")
    assert "<version>" not in missing.output and _calls(cluster) == []


def main_names(root: Path, move: dict[str, str]) -> Path:
    """The project's models/production_current.json, saying `move` (its checkout is main)."""
    pointer = root / "models" / "production_current.json"
    pointer.parent.mkdir()
    pointer.write_text(json.dumps(move))
    return pointer


def test_the_alerts_expect_the_version_mains_pointer_names(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any]
) -> None:
    root, cluster = cluster_project
    pointer = main_names(root, {"action": "rollback", "from_version": "6", "to_version": "5"})
    result = cli("deploy", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "--set-string model.version=1 --set-string monitoring.expectedModelVersion=5" in result.output
    said = "leave the production address (svc/wms-model in namespace wms) as it is: main's production is 5"
    assert said in result.output and "devops/helm/wms-entry" not in result.output
    pointer.write_text("{not json")
    result = cli("deploy")
    assert result.exit_code == 1 and "names no model version" in result.output
    assert "Traceback" not in result.output and _calls(cluster) == []  # stopped before building


def test_the_namespace_of_mains_production_is_never_cleaned_up(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any]
) -> None:
    root, cluster = cluster_project
    main_names(root, {"action": "promote", "from_version": "6", "to_version": "7"})
    result = cli("deploy")  # version 1, while main names 7: the oldest namespace, past keep_namespaces
    assert result.exit_code == 0, result.output
    kept = "removed old namespaces: model-9 (kept the newest 2 and model-7, main's production)"
    assert kept in result.output
    assert "main's production is 7: its alerts say so until a deploy from main" in result.output
    # a version tried by hand does not take the clients: the address follows main's production
    said = "[8/9] production address svc/wms-model in namespace wms left on nothing: it follows main's"
    assert f"{said} production (7)" in result.output
    assert not any(c["who"] == "helm" and "wms" in c["args"] for c in _calls(cluster))
    # what its alert expects, beside what it serves: `wms deploy status` and later deploys read it
    assert cluster.labels["model-1"] == {
        "app.kubernetes.io/managed-by": "wms", "wms/model-version": "1", "wms/expected-version": "7",
    }  # fmt: skip
    models = sorted(n for n in cluster.namespaces if n.startswith("model-"))
    assert models == ["model-1", "model-7", "model-8"]


def test_a_failing_exec_plugin_stops_the_deploy_before_anything_is_built(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any], tmp_path: Path
) -> None:
    _, cluster = cluster_project
    plugin = tmp_path / "get-token"
    plugin.write_text(f"#!{sys.executable}\nimport sys\nsys.exit('the SSO session has expired')\n")
    plugin.chmod(0o755)
    config = json.loads((tmp_path / "kubeconfig").read_text())
    exec_plugin = {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin)}
    config["users"] = [{"name": "u", "user": {"exec": exec_plugin}}]
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    result = cli("deploy")
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: user 'u' of kubeconfig ") and last.endswith(
        f"`{plugin}` failed with exit code 1: the SSO session has expired"
    )
    assert "Traceback" not in result.output and _calls(cluster) == []  # no docker login, no API call


@pytest.mark.parametrize(
    ("left", "undo"), [("pending-upgrade", "rollback"), ("pending-install", "uninstall"), ("deployed", None)]
)
def test_a_release_a_killed_helm_left_pending_is_undone_before_the_upgrade(
    cluster_project: tuple[Path, FakeCluster],
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    left: str,
    undo: str | None,
) -> None:
    """A cancelled deploy job kills helm mid-upgrade; helm then refuses every later upgrade of the
    release ("another operation is in progress") until someone undoes it by hand."""
    _, cluster = cluster_project
    monkeypatch.setenv("WMS_FAKE_HELM_STATUS", left)
    result = cli("deploy")
    assert result.exit_code == 0, result.output
    helm = [c["args"] for c in _calls(cluster) if c["who"] == "helm" and "model-1" in c["args"]]
    if undo is None:
        assert [a[0] for a in helm] == ["status", "upgrade"] and "interrupted helm" not in result.output
        return
    assert [a[0] for a in helm] == ["status", undo, "upgrade"]
    assert helm[1][1:] == ["wms-model", "--namespace", "model-1", "--wait"]
    entry = [c["args"] for c in _calls(cluster) if c["who"] == "helm" and "wms" in c["args"]]
    assert [a[0] for a in entry] == ["status", undo, "upgrade"]  # the production address's too
    assert f"release wms-model in model-1 was left {left} by an interrupted helm: undone" in result.output


def test_the_address_moves_only_to_a_version_that_answers_and_a_failed_switch_cleans_up_nothing(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """helm --atomic puts the address back when its new pod never becomes ready, and a switch that
    helm calls done but that the address does not answer to stops the deploy too: either way the
    address goes on serving what it served, and no old namespace is removed."""
    _, cluster = cluster_project
    monkeypatch.setenv("WMS_FAKE_FAIL_IN", "wms")
    result = cli("deploy")
    assert result.exit_code == 1 and "Traceback" not in result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("error: `") and "rolled back due to atomic being set" in error, error
    assert error.endswith("; see `kubectl -n wms get events`")
    assert "[7/9] health and smoke check through the Service" in result.output  # the new version answered
    assert not any(c.get("method") == "DELETE" for c in _calls(cluster))

    monkeypatch.delenv("WMS_FAKE_FAIL_IN")
    monkeypatch.setenv("WMS_FAKE_UNSERVED", "wms")
    result = cli("--set", "deploy.ready_timeout_seconds=2", "deploy")
    assert result.exit_code == 1 and "Traceback" not in result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith(
        "error: the production address (svc/wms-model in namespace wms) serves nothing 2 s after its "
        "switch to model 1; see `kubectl -n wms describe pods`"
    ), error
    assert not any(c.get("method") == "DELETE" for c in _calls(cluster))
    assert set(OLD_NAMESPACES) <= set(cluster.namespaces)


def test_without_a_production_address_the_seed_steps_stay_as_they_were(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any]
) -> None:
    _, cluster = cluster_project
    result = cli("--set", "deploy.entry_namespace=", "deploy")
    assert result.exit_code == 0, result.output
    assert [int(n) for n in re.findall(r"^\[(\d)/8\] ", result.output, re.M)] == list(range(1, 9))
    assert "production address" not in result.output
    assert not any(
        "/namespaces/wms" in c.get("path", "") or "wms" in c.get("args", []) for c in _calls(cluster)
    )
    assert "wms" not in cluster.namespaces
    assert "/api/v1/namespaces/model-1/services/wms-model:http/proxy/" in result.output


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        (
            "model-prod",
            "starts with namespace_prefix 'model-', so the cleanup of old versions would delete it",
        ),
        ("WMS_Prod", "write a Kubernetes namespace name"),
    ],
)
def test_an_address_namespace_the_cleanup_would_take_or_kubernetes_refuses_is_one_line(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any], value: str, complaint: str
) -> None:
    _, cluster = cluster_project
    result = cli("--set", f"deploy.entry_namespace={value}", "deploy", "--dry-run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and complaint in line, line
    assert _calls(cluster) == []


def test_the_plan_names_the_switch_of_the_production_address(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any]
) -> None:
    result = cli("deploy", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "refresh imagePullSecret ecr-pull-secret in namespace model-1 and wms" in result.output
    switch = re.search(
        r"helm upgrade --install wms-model \S*devops/helm/wms-entry --namespace wms .*$", result.output, re.M
    )
    assert switch and "--set upstream.namespace=model-1" in switch[0], result.output
    assert (
        "wait until the production address (svc/wms-model in namespace wms) answers /ready with 1"
        in result.output
    )


def test_the_address_waits_for_and_takes_an_upload_as_the_model_pods_do(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any]
) -> None:
    """An operator who lets slow clients upload for longer, or larger photos in
    (serve.uploadTimeoutSeconds, serve.maxUploadMb in the cluster's values file), raises the
    address's deadline and body limit too: its proxy would answer 408 or 413 first."""
    root, cluster = cluster_project
    values = root / "infrastructure" / "helm-values.yaml"
    text = values.read_text().replace(
        "  maxUploadMb: 20\n", "  maxUploadMb: 100\n  uploadTimeoutSeconds: 300\n"
    )
    values.write_text(text)
    assert cli("deploy").exit_code == 0
    helm = [c["args"] for c in _calls(cluster) if c["who"] == "helm" and c["args"][0] == "upgrade"]
    (entry,) = [args for args in helm if args[args.index("--namespace") + 1] == "wms"]
    assert entry[-10:-4] == [
        "--set", "serve.uploadTimeoutSeconds=300", "--set", "serve.headerTimeoutSeconds=10",
        "--set", "maxBodyMb=200",
    ]  # fmt: skip
