"""The production address's chart (devops/helm/wms-entry): its values validate as Helm checks
them, its pod is locked down and reaches only DNS and the model pods, a switch never leaves the
address without a ready pod, and the command it runs is the proxy that forwards to the model."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from tests.deploy.test_chart import REPO, _merge, _skeleton, assert_every_value_read_is_declared

from wms.config import ServeSettings
from wms.deploy.local import free_port
from wms.deploy.proxy import write_upstream
from wms.serve.app import create_app
from wms.serve.model import ModelCard, load_folder

ENTRY = REPO / "devops" / "helm" / "wms-entry"
MODEL = REPO / "devops" / "helm" / "wms-model"
SRC = REPO / "src"


def _template(name: str) -> Any:
    return _skeleton((ENTRY / "templates" / name).read_text())


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads((ENTRY / "values.schema.json").read_text())


@pytest.fixture(scope="module")
def deployed_values() -> dict[str, Any]:
    """What `wms deploy` hands Helm: the chart's defaults and its --set values."""
    values = yaml.safe_load((ENTRY / "values.yaml").read_text())
    sets = {
        "image": {"repository": "1.dkr.ecr.us-east-1.amazonaws.com/wms-model", "tag": "v3-abc"},
        "imagePullSecrets": [{"name": "ecr-pull-secret"}],
        "upstream": {"namespace": "model-3", "version": "3"},
    }
    return _merge(values, sets)


def test_the_values_validate_and_mistakes_are_caught(
    schema: dict[str, Any], deployed_values: dict[str, Any]
) -> None:
    jsonschema.validate(yaml.safe_load((ENTRY / "values.yaml").read_text()), schema)
    jsonschema.validate(deployed_values, schema)
    for change, complaint in [
        ({"upstream": {"namespace": "Model_3"}}, "does not match"),
        ({"upstream": {"port": 0}}, "less than the minimum"),
        ({"drainSeconds": 600}, "greater than the maximum"),
        ({"upstraem": {}}, "Additional properties"),
    ]:
        with pytest.raises(jsonschema.ValidationError, match=re.escape(complaint)):
            jsonschema.validate(_merge(deployed_values, change), schema)


def test_every_value_the_templates_read_is_declared(deployed_values: dict[str, Any]) -> None:
    used = assert_every_value_read_is_declared(ENTRY, deployed_values)
    assert {"upstream.namespace", "upstream.version", "serve.uploadTimeoutSeconds"} <= used


def test_the_pod_is_locked_down_as_the_models_are() -> None:
    entry, model = (
        _template("deployment.yaml"),
        _skeleton((MODEL / "templates" / "deployment.yaml").read_text()),
    )
    pod, model_pod = entry["spec"]["template"]["spec"], model["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == model_pod["securityContext"]
    (container,) = pod["containers"]
    assert container["securityContext"] == model_pod["containers"][0]["securityContext"]
    # the one volume: the upstream file, read-only; the proxy writes nothing
    assert container["volumeMounts"] == [
        {"name": "upstream", "mountPath": "/etc/wms-entry", "readOnly": True}
    ]
    assert pod["volumes"] == [{"name": "upstream", "configMap": {"name": "TEMPLATED"}}]
    assert entry["metadata"]["annotations"] == model["metadata"]["annotations"] | {
        "checkov.io/skip1": entry["metadata"]["annotations"]["checkov.io/skip1"]
    }
    for template in (ENTRY / "templates").glob("*.yaml"):
        metadata = re.search(r"^metadata:\n((?:  .*\n)+)", template.read_text(), re.M)
        assert metadata and "\n  namespace: {{ .Release.Namespace }}\n" in f"\n{metadata[1]}", template.name


def test_a_switch_starts_the_new_pod_before_the_old_one_stops_answering() -> None:
    """The address always has a ready pod: the new one (the new upstream) must answer /ready,
    which the proxy forwards to the model, before the old one is stopped."""
    deployment = _template("deployment.yaml")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    template = deployment["spec"]["template"]
    # a new upstream is a new pod: the checksum of the ConfigMap that names it
    assert "checksum/config" in template["metadata"]["annotations"]
    (container,) = template["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"  # the model's, through the proxy
    assert container["livenessProbe"]["httpGet"]["path"] == "/_proxy"  # the proxy's own
    # and the old pod drains (tests/deploy/test_chart.py, test_a_pod_told_to_stop_...)
    assert container["lifecycle"]["preStop"]["sleep"]


def test_the_pod_reaches_dns_and_the_model_pods_and_nothing_else() -> None:
    policy = _template("networkpolicy.yaml")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    dns, models = policy["egress"]
    assert dns["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
    ]
    assert sorted(p["protocol"] for p in dns["ports"]) == ["TCP", "UDP"] and {
        p["port"] for p in dns["ports"]
    } == {53}
    # the namespaces `wms deploy` made for a model version carry its label (wms.deploy.kube)
    from wms.deploy.kube import VERSION_LABEL

    (to,) = models["to"]
    assert to["namespaceSelector"] == {"matchExpressions": [{"key": VERSION_LABEL, "operator": "Exists"}]}
    model_labels = (MODEL / "templates" / "_helpers.tpl").read_text()
    (name,) = to["podSelector"]["matchLabels"].values()
    assert f"app.kubernetes.io/name: {name}" in model_labels
    model_port = _skeleton((MODEL / "templates" / "deployment.yaml").read_text())["spec"]["template"]["spec"][
        "containers"
    ][0]["ports"]
    assert models["ports"] == [{"port": model_port[0]["containerPort"], "protocol": "TCP"}]


def test_the_upstream_file_is_the_one_the_proxy_reads() -> None:
    """The ConfigMap's upstream.json has the keys write_upstream writes: url and version."""
    text = (ENTRY / "templates" / "configmap.yaml").read_text()
    line = re.search(r"^  upstream\.json: \{\{ dict (.*) \| toJson \| quote \}\}$", text, re.M)
    assert line, text
    keys = re.findall(r'(?:^|\) )"(\w+)" ', line[1])
    assert keys == ["url", "version"]
    assert 'printf "http://%s.%s.svc.cluster.local:%d" .Values.upstream.service' in line[1]


def test_the_command_the_pod_runs_forwards_to_the_model(
    tmp_path: Path, exported_model: Path, live_server: Callable[..., Any]
) -> None:
    """The container's command line, with the values put in, starts the proxy; through it the
    model answers /ready (the readiness probe) and /predict, and /_proxy (the liveness probe)
    names the upstream the ConfigMap gives it."""
    values = yaml.safe_load((ENTRY / "values.yaml").read_text())
    (container,) = _template("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    command = [str(part) for part in container["command"]]
    assert command[:3] == ["python", "-m", "wms.deploy.proxy"]
    upstream_file = tmp_path / "upstream.json"
    port = free_port()
    filled = {
        "--header-timeout": values["serve"]["headerTimeoutSeconds"],
        "--upload-timeout": values["serve"]["uploadTimeoutSeconds"],
        "--max-body-mb": values["maxBodyMb"],
    }
    args = []
    for part in command[3:]:
        flag, _, value = part.partition("=")
        assert value != "TEMPLATED" or flag in filled, part
        if flag == "--upstream-file":
            assert value.startswith(container["volumeMounts"][0]["mountPath"] + "/")
            value = str(upstream_file)
        args.append(f"{flag}={filled.get(flag, value) if value == 'TEMPLATED' else value}")
    args = [
        a.replace("--port=8000", f"--port={port}").replace("--host=0.0.0.0", "--host=127.0.0.1") for a in args
    ]
    assert container["ports"] == [{"name": "http", "containerPort": 8000}]

    sha = hashlib.sha256((exported_model / "model.onnx").read_bytes()).hexdigest()
    served = load_folder(exported_model, ModelCard(version="3", onnx_sha256=sha))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    with live_server(create_app(served, ServeSettings())) as model:
        write_upstream(upstream_file, model.url, "3")
        proc = subprocess.Popen([sys.executable, *command[1:3], *args], env=env)
        try:
            url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 30
            while True:
                try:
                    whoami = httpx.get(f"{url}/_proxy", timeout=1)
                    break
                except httpx.HTTPError:
                    assert proc.poll() is None and time.monotonic() < deadline, "the proxy did not start"
                    time.sleep(0.05)
            assert whoami.json()["version"] == "3" and whoami.json()["url"] == model.url
            ready = httpx.get(f"{url}/ready", timeout=10)
            assert ready.status_code == 200 and str(ready.json()["version"]) == "3"
        finally:
            proc.terminate()
            proc.wait(timeout=30)
