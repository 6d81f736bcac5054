"""The Helm chart: infrastructure/helm-values.yaml validates against values.schema.json, as Helm checks
it; the Deployment is locked down (checkov's Kubernetes checks) and the server runs that way."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
import yaml
from PIL import Image
from tests.deploy.conftest import READ_ONLY_ROOT, Pod

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "devops" / "helm" / "wms-model"


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of -f files over the chart's values.yaml: maps merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


@pytest.fixture(scope="module")
def deployed_values() -> dict[str, Any]:
    """What `wms deploy` hands Helm: chart defaults, the cluster file, then its --set values."""
    chart = yaml.safe_load((CHART / "values.yaml").read_text())
    values = _merge(chart, yaml.safe_load((REPO / "infrastructure" / "helm-values.yaml").read_text()))
    image = {"repository": "1.dkr.ecr.us-east-1.amazonaws.com/wms-model", "tag": "v3-abc"}
    sets = {
        "image": image,
        "imagePullSecrets": [{"name": "ecr-pull-secret"}],
        "model": {"version": "3"},
        "monitoring": {"expectedModelVersion": "3"},
    }
    return _merge(values, sets)


def test_the_cluster_values_validate(schema: dict[str, Any], deployed_values: dict[str, Any]) -> None:
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)
    jsonschema.validate(deployed_values, schema)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"replicaCount": "two"}, "'two' is not of type 'integer'"),
        ({"serve": {"maxConcurrency": 0}}, "less than the minimum"),
        ({"resources": {"limits": {"memory": "lots"}}}, "does not match"),
        ({"image": {"tag": ""}}, "should be non-empty"),
        ({"servce": {}}, "Additional properties"),
        ({"prometheusRule": {"errorRatio": 5}}, "greater than the maximum"),
        ({"prometheusRule": {"p99LatencySeconds": 30}}, "greater than or equal to the maximum"),
        ({"dashboard": {"labelKey": "grafana dashboard"}}, "does not match"),
        ({"monitoring": {"expectedModelVersion": "production"}}, "does not match"),
        # an unquoted off is YAML's false; the pod writes to its node's spool, never to S3 itself
        ({"serve": {"capture": False}}, "is not one of"),
        ({"serve": {"capture": "sample", "captureDir": "s3://b/wms/inbox"}}, "Additional properties"),
    ],
)
def test_mistakes_in_values_are_caught(
    schema: dict[str, Any], deployed_values: dict[str, Any], change: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(jsonschema.ValidationError, match=re.escape(complaint)):
        jsonschema.validate(_merge(deployed_values, change), schema)


def assert_every_value_read_is_declared(chart: Path, values: dict[str, Any]) -> set[str]:
    """Every `.Values.x.y` the chart's templates read is in `values`; the paths they read."""
    used = set()
    for template in (chart / "templates").iterdir():
        used |= set(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()))
    for path in used:
        node: Any = values
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f".Values.{path} is not in values.yaml"
            node = node[part]
    return used


def test_every_value_the_templates_read_is_declared(deployed_values: dict[str, Any]) -> None:
    assert "model.version" in assert_every_value_read_is_declared(CHART, deployed_values)


def test_the_image_is_slim_non_root_and_torch_free() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\$\{BASE_DIGEST\}$", dockerfile, re.M)
    assert re.search(r"^USER wms$", dockerfile, re.M) and "HEALTHCHECK" in dockerfile
    assert "pip install --no-deps ." in dockerfile and "['optional-dependencies']" in dockerfile
    import tomllib

    serve = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    names = {re.split(r"[<>=\[ ]", requirement)[0].lower() for requirement in serve}
    assert {"onnxruntime", "fastapi", "uvicorn"} <= names and not names & {"torch", "mlflow", "wms"}


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """A Dockerfile's instructions, (keyword, arguments), with continued lines joined."""
    joined = re.sub(r"\\\n", " ", re.sub(r"^\s*#.*\n", "", dockerfile, flags=re.M))
    return [(line.split()[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


def test_a_change_in_src_reuses_the_dependency_layer() -> None:
    """The dependencies (about 280 MB) are installed before the sources come in, so a deploy after a
    code change stores only the package's layer on the node that builds, not the dependencies again."""
    steps = _instructions((REPO / "docker" / "Dockerfile").read_text())
    install = next(i for i, (key, args) in enumerate(steps) if key == "RUN" and "-r /tmp/serve.txt" in args)
    copied = [args.split()[:-1] for key, args in steps[:install] if key == "COPY"]
    assert copied == [["pyproject.toml", "constraints.txt"]], copied
    assert any(key == "COPY" and args.startswith("src ") for key, args in steps[install:])


def _skeleton(template: str) -> Any:
    """A template's YAML with Helm's actions taken out: comments and lines that are only an action
    go, any other action becomes the word TEMPLATED. Enough to read the structure it always has."""
    template = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", template, flags=re.S)  # comments
    template = re.sub(r"^[ \t]*\{\{-.*?\}\}[ \t]*\n", "", template, flags=re.M | re.S)
    return yaml.safe_load(re.sub(r"\{\{.*?\}\}", "TEMPLATED", template))


def test_the_deployment_is_locked_down() -> None:
    deployment = _skeleton(_capture_branch((CHART / "templates" / "deployment.yaml").read_text(), "off"))
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    uid = int(re.search(r"useradd .*--uid (\d+)", (REPO / "docker" / "Dockerfile").read_text())[1])  # type: ignore[index]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # the one writable place: an emptyDir at /tmp, where uploads over 1 MB are spooled (with
    # serve.capture on, the node's spool too: test_a_pod_that_captures_writes_to_its_nodes_spool...)
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    skips = deployment["metadata"]["annotations"]
    assert all(re.fullmatch(r"checkov\.io/skip\d+", key) for key in skips)
    assert all(re.fullmatch(r"CKV_K8S_\d+=\S.{20,}", reason) for reason in skips.values()), skips
    assert {reason.split("=")[0] for reason in skips.values()} == {"CKV_K8S_14", "CKV_K8S_15", "CKV_K8S_43"}


@pytest.mark.parametrize("chart", ["wms-model", "wms-entry"])
def test_a_pod_told_to_stop_answers_until_it_is_out_of_the_service_then_finishes_its_uploads(
    chart: str,
) -> None:
    """On SIGTERM uvicorn stops taking connections at once, but the cluster takes the pod out of
    its Service a moment later: a request sent meanwhile would be refused. The pod first sleeps
    drainSeconds (answering all the while), then uvicorn finishes the requests under way, an
    upload for up to serve.uploadTimeoutSeconds, before the grace period ends in a kill (its
    default, 30 s, cut such an upload short)."""
    folder = REPO / "devops" / "helm" / chart
    text = (folder / "templates" / "deployment.yaml").read_text()
    pod = _skeleton(_capture_branch(text, "off"))["spec"]["template"]["spec"]
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": "TEMPLATED"}}}
    assert "sleep: {seconds: {{ .Values.drainSeconds }}}" in text
    grace = (
        "terminationGracePeriodSeconds: {{ add .Values.drainSeconds .Values.serve.uploadTimeoutSeconds 10 }}"
    )
    assert grace in text and pod["terminationGracePeriodSeconds"] == "TEMPLATED"
    values = yaml.safe_load((folder / "values.yaml").read_text())
    assert 1 <= values["drainSeconds"] <= 10 and values["serve"]["uploadTimeoutSeconds"] >= 60


def _capture_branch(template: str, capture: str) -> str:
    """The template for serve.capture = `capture`: its `if eq/ne .Values.serve.capture "off"`
    blocks (with an `else` or not) resolved up to the next `end`, the rest left alone. An `end` of
    a block nested inside is left over as a line that is only an action, which _skeleton drops."""
    pattern = re.compile(
        r'\{\{-? if (eq|ne) \.Values\.serve\.capture "off" -?\}\}(.*?)'
        r"(?:\{\{-? else -?\}\}(.*?))?\{\{-? end -?\}\}",
        re.S,
    )

    def resolve(match: re.Match[str]) -> str:
        chosen = (capture == "off") == (match[1] == "eq")
        return match[2] if chosen else match[3] or ""

    return pattern.sub(resolve, template)


def test_every_resource_names_its_namespace_and_only_the_http_port_is_open() -> None:
    for template in (CHART / "templates").glob("*.yaml"):
        metadata = re.search(r"^metadata:\n((?:  .*\n)+)", template.read_text(), re.M)
        assert metadata and "\n  namespace: {{ .Release.Namespace }}\n" in f"\n{metadata[1]}", template.name
    template = (CHART / "templates" / "networkpolicy.yaml").read_text()
    policy = _skeleton(_capture_branch(template, "off"))
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and policy["spec"]["egress"] == []
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]


def test_a_pod_that_captures_writes_to_its_nodes_spool_and_still_reaches_no_one() -> None:
    """With serve.capture on, the pod's photos go to the node's spool, a memory-backed folder that
    the node sends on to S3 (infrastructure/scripts/capture.sh): the pod gets no way out."""
    policy = _skeleton(_capture_branch((CHART / "templates" / "networkpolicy.yaml").read_text(), "uncertain"))
    assert policy["spec"]["egress"] == []
    deployment = _capture_branch((CHART / "templates" / "deployment.yaml").read_text(), "uncertain")
    pod = _skeleton(deployment)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "captures"]
    script = (REPO / "infrastructure" / "scripts" / "capture.sh").read_text()
    spool = re.search(r"^spool=(\S+)$", script, re.M)
    user = re.search(r"^pod_user=(\d+) ", script, re.M)
    assert spool and volume["hostPath"] == {"path": spool[1], "type": "Directory"}
    assert user and pod["securityContext"]["runAsUser"] == int(user[1])  # the only writer of the spool
    (container,) = pod["containers"]
    assert {"name": "captures", "mountPath": "/captures"} in container["volumeMounts"]
    config = _capture_branch((CHART / "templates" / "configmap.yaml").read_text(), "uncertain")
    assert "WMS_SERVE__CAPTURE_DIR: /captures\n" in config and "AWS_" not in config
    off = _skeleton(_capture_branch((CHART / "templates" / "deployment.yaml").read_text(), "off"))
    assert [v["name"] for v in off["spec"]["template"]["spec"]["volumes"]] == ["tmp"]  # no node folder


def test_capture_is_off_by_default_and_every_capture_setting_reaches_the_pod() -> None:
    from wms.config.sections import ServeSettings

    values = yaml.safe_load((CHART / "values.yaml").read_text())["serve"]
    assert values["capture"] == "off"
    template = (CHART / "templates" / "configmap.yaml").read_text()
    assert "WMS_SERVE__CAPTURE" not in _capture_branch(template, "off")
    rendered = _capture_branch(template, "sample")
    passed = dict(re.findall(r"(WMS_SERVE__\w+): \{\{ \.Values\.serve\.(\w+)", rendered))
    settings = [name for name in ServeSettings.model_fields if name.startswith("capture")]
    for name in settings:
        value = passed.get(f"WMS_SERVE__{name.upper()}")
        camel = re.sub(r"_(\w)", lambda m: m[1].upper(), name)
        if name == "capture_dir":  # the node's spool, mounted into the pod: not a value
            continue
        assert value == camel, f"serve.{name} is not passed to the pod as serve.{camel}"
        assert values[camel] == ServeSettings.model_fields[name].default, camel


def test_the_image_carries_the_server_and_no_s3_client(tmp_path: Path) -> None:
    """The Dockerfile installs the `serve` extra: no torch, and no S3 client, which no pod needs."""
    steps = _instructions((REPO / "docker" / "Dockerfile").read_text())
    run = next(args for key, args in steps if key == "RUN" and "-r /tmp/serve.txt" in args)
    code = re.search(r'python -c "(.*?)" > /tmp/serve\.txt', run)
    assert code, run
    (tmp_path / "pyproject.toml").write_bytes((REPO / "pyproject.toml").read_bytes())
    listed = subprocess.run(
        [sys.executable, "-c", code[1]], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    names = {re.split(r"[<>=\[ ]", requirement)[0].lower() for requirement in listed if requirement}
    assert {"fastapi", "onnxruntime", "uvicorn", "httpx"} <= names, names  # httpx: the entry's proxy
    assert not names & {"torch", "mlflow", "wms", "s3fs", "boto3", "botocore"}, names


def test_the_dashboard_and_the_rules_ship_when_turned_on() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["dashboard"]["enabled"] is False and values["prometheusRule"]["enabled"] is False
    configmap = (CHART / "templates" / "dashboard-configmap.yaml").read_text()
    assert configmap.startswith("{{- if .Values.dashboard.enabled }}")
    assert "{{ .Values.dashboard.labelKey }}: {{ .Values.dashboard.labelValue | quote }}" in configmap
    assert '.Files.Get "dashboards/wms-model.json"' in configmap
    assert (values["dashboard"]["labelKey"], values["dashboard"]["labelValue"]) == ("grafana_dashboard", "1")
    rule = (CHART / "templates" / "prometheusrule.yaml").read_text()
    assert "{{- if and .Values.prometheusRule.enabled (" in rule
    assert '.Files.Get "files/alerts.rules.yaml"' in rule and "| fromYaml" in rule
    assert _skeleton(rule)["kind"] == "PrometheusRule"
    for name in ("dashboards/wms-model.json", "files/alerts.rules.yaml"):
        assert (CHART / name).is_file()


def test_the_server_runs_on_a_read_only_root_apart_from_tmp(pod: Pod) -> None:
    """What the chart's readOnlyRootFilesystem allows: uploads spooled to /tmp, nothing else written."""
    big = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (900, 1200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big, "PNG")
    assert big.tell() > 2 * 2**20  # over the multipart parser's 1 MB in memory
    small = io.BytesIO()
    Image.fromarray(noise[:64, :64]).save(small, "JPEG")
    for photo in (big.getvalue(), small.getvalue()):
        answer = httpx.post(f"{pod.url}/predict", files={"file": ("p", photo)}, timeout=60)
        assert answer.status_code == 200, answer.text
    for path in ("/", "/docs", "/openapi.json", "/model", "/metrics", "/ready"):
        assert httpx.get(f"{pod.url}{path}").status_code == 200, path
    assert pod.refused_writes() == []


def test_the_server_closes_a_connection_whose_headers_never_end(pod: Pod) -> None:
    """serve.header_timeout_seconds (2 s here) reaches `wms serve`: a client sending a header byte
    every 0.2 s gets 408 and is closed, where before it held its socket for as long as it went on;
    /metrics counts it."""

    def header_timeouts() -> float:
        scrape = httpx.get(f"{pod.url}/metrics").text
        return float(re.findall(r"^wms_request_header_timeouts_total (\S+)$", scrape, re.MULTILINE)[0])

    before = header_timeouts()
    host, port = pod.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=0.2) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        heard, deadline = b"", time.monotonic() + 6
        while time.monotonic() < deadline:
            try:
                data = sock.recv(4096)
            except TimeoutError:
                data = None  # nothing said yet: one more byte
            except ConnectionResetError:
                break
            if data == b"":
                break  # closed
            heard += data or b""
            try:
                sock.sendall(b"X")
            except OSError:
                break
        else:
            pytest.fail("a client sending its headers a byte at a time was still connected after 6 s")
    assert heard.startswith(b"HTTP/1.1 408") and b"serve.header_timeout_seconds" in heard, heard
    assert header_timeouts() == before + 1


def test_the_read_only_root_of_the_test_server_refuses_writes(tmp_path: Path) -> None:
    """The check above can fail: the same hook refuses a write outside $TMPDIR."""
    code = READ_ONLY_ROOT.split("import runpy")[0] + "open('written.txt', 'w')\n"
    writable = tmp_path / "tmp"
    writable.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "TMPDIR": str(writable)},
    )  # fmt: skip
    assert done.returncode == 1 and "Read-only file system" in done.stderr
    assert f"READ-ONLY ROOT: open {tmp_path / 'written.txt'}" in done.stderr
    assert not (tmp_path / "written.txt").exists()


# API groups of Kubernetes itself; any other group with a dot is a custom resource's.
BUILT_IN_GROUP = re.compile(r"[a-z0-9]+|[a-z0-9.-]+\.k8s\.io")


def _custom_resources(chart: Path) -> dict[str, tuple[str, str]]:
    """The templates that make a custom resource: file name -> (apiVersion/kind, the `if` opening it)."""
    found = {}
    for template in sorted((chart / "templates").glob("*.yaml")):
        text = template.read_text()
        api = re.search(r"^apiVersion: (\S+)$", text, re.M)
        kind = re.search(r"^kind: (\S+)$", text, re.M)
        assert api and kind, template.name
        group = api[1].rpartition("/")[0]
        if group and not BUILT_IN_GROUP.fullmatch(group):
            opening = re.search(r"^\{\{-? if (.*?) -?\}\}$", text, re.M)
            found[template.name] = (f"{api[1]}/{kind[1]}", opening[1] if opening else "")
    return found


@pytest.mark.parametrize("chart", ["wms-model", "wms-entry"])
def test_without_the_operators_crds_the_chart_still_installs_and_says_it_is_unwatched(chart: str) -> None:
    """Helm refuses a whole release when one of its kinds is unknown to the cluster ("no matches for
    kind ServiceMonitor ... ensure CRDs are installed first"): if kube-prometheus-stack failed to
    install, every deploy would fail. So each custom resource renders only where the cluster serves
    its kind (.Capabilities.APIVersions.Has), NOTES.txt says which were left out, and CI renders
    them all for kubeconform by naming those kinds with --api-versions. The model's chart and the
    production address's both."""
    folder = REPO / "devops" / "helm" / chart
    custom = _custom_resources(folder)
    assert {kind for kind, _ in custom.values()} == {
        "monitoring.coreos.com/v1/ServiceMonitor",
        "monitoring.coreos.com/v1/PrometheusRule",
    }
    notes = (folder / "templates" / "NOTES.txt").read_text()
    ci = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yaml").read_text())
    assert any("devops/helm/render.sh" in str(s.get("run")) for s in ci["jobs"]["helm"]["steps"])
    render = (REPO / "devops" / "helm" / "render.sh").read_text()
    for name, (kind, opening) in custom.items():
        toggle = {"servicemonitor.yaml": "serviceMonitor", "prometheusrule.yaml": "prometheusRule"}[name]
        assert opening == f'and .Values.{toggle}.enabled (.Capabilities.APIVersions.Has "{kind}")', name
        assert f'if and .Values.{toggle}.enabled (not (.Capabilities.APIVersions.Has "{kind}"))' in notes
    for kind, _ in custom.values():  # in the command that renders this chart
        command = next(c for c in render.split('\n"$helm" template')[1:] if f"devops/helm/{chart}" in c)
        assert f"--api-versions {kind}" in command, f"CI would render {chart} without {kind}"
    assert re.search(r"^\{\{- if \$skipped \}\}\nNOT MONITORED: ", notes, re.M)
