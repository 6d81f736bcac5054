"""Both charts rendered by the real helm (the dev extra's helm-binary, .venv/bin/helm), offline:
`helm lint`, then `helm template` with exactly the arguments `wms deploy` and ci.yaml's helm job
pass to it. The values schema, the templates' functions and what they render are helm's, not
a reading of them (tests/deploy/test_chart.py and test_entry_chart.py read the templates)."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from wms.config import Project, load_settings

REPO = Path(__file__).resolve().parents[2]


def _helm() -> str | None:
    beside = Path(sys.executable).parent / "helm"
    return str(beside) if beside.exists() else shutil.which("helm")


pytestmark = pytest.mark.skipif(_helm() is None, reason="helm is not installed (dev extra helm-binary)")


def helm(*args: str) -> str:
    done = subprocess.run(
        [str(_helm()), *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"helm {shlex.join(args)}:\n{done.stderr}"
    return done.stdout


def render() -> str:
    """Both charts, every toggle on, as devops/helm/render.sh renders them for ci.yaml and
    `make checkov`."""
    done = subprocess.run(
        ["bash", "devops/helm/render.sh"], cwd=REPO, env={**os.environ, "HELM": str(_helm())},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def as_template(upgrade: list[str]) -> list[str]:
    """`helm upgrade --install …`'s arguments for `helm template`: the same release, chart,
    namespace and values, without what only an install means (--atomic, --wait, --timeout)."""
    assert upgrade[1:3] == ["upgrade", "--install"]
    kept = [a for a in upgrade[3:] if a not in ("--create-namespace", "--atomic", "--wait")]
    timeout = kept.index("--timeout")
    return ["template", *kept[:timeout], *kept[timeout + 2 :]]


def _documents(rendered: str) -> dict[str, dict[str, Any]]:
    """The rendered objects by kind (each chart has at most one of a kind)."""
    found = {}
    for doc in yaml.safe_load_all(rendered):
        if doc:
            assert doc["kind"] not in found, doc["kind"]
            found[doc["kind"]] = doc
    return found


@pytest.fixture
def project() -> Project:
    """The repository's own settings (wms.toml), as `wms deploy` reads them in a checkout."""
    return load_settings(REPO, REPO / "wms.toml")


def test_both_charts_lint_clean() -> None:
    helm("lint", "--strict", "devops/helm/wms-model", "--values", "infrastructure/helm-values.yaml")
    helm("lint", "--strict", "devops/helm/wms-entry", "--set", "upstream.namespace=model-3")


def test_what_wms_deploy_installs_renders_as_the_deploy_expects(project: Project) -> None:
    """`helm upgrade --install …` as K8sDeployer and Entry build it, as `helm template`: the
    values pass the charts' schemas, the model pod carries its version, and the address forwards
    to that version's Service, drains, and rolls when its upstream changes."""
    from wms.deploy.k8s import K8sDeployer

    deployer = K8sDeployer(project, print)
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/wms-model:v3-0123abc"

    def template(upgrade: list[str]) -> dict[str, dict[str, Any]]:
        return _documents(helm(*as_template(upgrade)))

    model = template(deployer.helm_args("model-3", image, "3", "3"))
    pod = model["Deployment"]["spec"]["template"]
    assert pod["metadata"]["labels"]["wms/model-version"] == "3"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == image
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert pod["spec"]["terminationGracePeriodSeconds"] == 5 + 180 + 10
    assert model["Service"]["metadata"] == model["Service"]["metadata"] | {
        "name": "wms-model",
        "namespace": "model-3",
    }

    assert deployer.entry is not None
    entry = template(deployer.entry.helm_args("model-3", image, "3"))
    upstream = json.loads(entry["ConfigMap"]["data"]["upstream.json"])
    port = model["Service"]["spec"]["ports"][0]["port"]
    assert upstream == {"url": f"http://wms-model.model-3.svc.cluster.local:{port}", "version": "3"}
    assert (
        entry["Service"]["metadata"]["name"] == "wms-model"
        and entry["Service"]["metadata"]["namespace"] == "wms"
    )
    pod = entry["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == image and container["command"][:3] == ["python", "-m", "wms.deploy.proxy"]
    assert {"--upload-timeout=180", "--header-timeout=10", "--max-body-mb=64"} <= set(container["command"])
    assert pod["spec"]["imagePullSecrets"] == [{"name": "ecr-pull-secret"}]
    # the resolver asks for the upstream's whole name first, not under every search domain
    ndots = {o["name"]: o["value"] for o in pod["spec"]["dnsConfig"]["options"]}["ndots"]
    assert int(ndots) <= httpx.URL(upstream["url"]).host.count(".")
    # the address's egress reaches the port the model's pods listen on
    model_port = model["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert entry["NetworkPolicy"]["spec"]["egress"][1]["ports"] == [{"port": model_port, "protocol": "TCP"}]
    # another upstream is another pod template (the checksum of its ConfigMap): the switch rolls
    other = template(deployer.entry.helm_args("model-4", image, "4"))
    before, after = (d["Deployment"]["spec"]["template"]["metadata"]["annotations"] for d in (entry, other))
    assert before["checksum/config"] != after["checksum/config"]


def test_ci_lints_and_renders_both_charts_with_the_commands_it_names(tmp_path: Path) -> None:
    """ci.yaml's helm job lints each chart, then renders both with devops/helm/render.sh into
    rendered.yaml, which kubeconform and checkov read (as `make checkov` does): each runs here."""
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yaml").read_text())
    job = workflow["jobs"]["helm"]
    runs = [step["run"].replace("$CHART", job["env"]["CHART"]) for step in job["steps"] if "run" in step]
    lints = [shlex.split(run) for run in runs if run.startswith("helm lint")]
    assert sorted(words[3] for words in lints) == ["devops/helm/wms-entry", "devops/helm/wms-model"]
    for words in lints:
        helm(*words[1:])
    assert "devops/helm/render.sh > rendered.yaml" in runs
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(render()) if d)
    for kind in ("Deployment", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"):
        assert kinds.count(kind) == 2, kind  # the model's and the production address's
    assert {"ServiceMonitor", "PrometheusRule", "Ingress", "HorizontalPodAutoscaler", "ConfigMap"} <= set(
        kinds
    )
    makefile = (REPO / "Makefile").read_text()
    assert "devops/helm/render.sh" in makefile and "--framework kubernetes" in makefile  # checkov reads it


def test_what_helm_renders_is_valid_for_the_kubernetes_the_cluster_runs() -> None:
    """What kubeconform checks in ci.yaml, here: every object both charts render validates
    strictly against the API schemas of the Kubernetes that terraform's k3s_version installs. A
    field that version does not know fails, be it a typo or one it is too old for (the drain's
    preStop.sleep needs 1.30: 1.28 refuses it)."""
    import kubernetes_validate

    variables = (REPO / "infrastructure" / "terraform" / "variables.tf").read_text()
    k3s = re.search(r'variable "k3s_version" \{[^}]*default\s*=\s*"v(\d+\.\d+)\.', variables)
    assert k3s, "no default k3s_version in variables.tf"
    version = f"{k3s[1]}.0"
    checked = []
    deployments = []
    for doc in yaml.safe_load_all(render()):
        if not doc or doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus operator's kinds: ci.yaml's kubeconform reads their CRDs' schemas
        kubernetes_validate.validate(doc, version, strict=True)
        checked.append(doc["kind"])
        if doc["kind"] == "Deployment":
            deployments.append(doc)
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "NetworkPolicy",
        "Ingress",
        "HorizontalPodAutoscaler",
    } <= set(checked)
    assert len(deployments) == 2  # the model's and the production address's
    with pytest.raises(kubernetes_validate.ValidationError, match="'sleep' was unexpected"):
        kubernetes_validate.validate(deployments[0], "1.28.0", strict=True)
    typo = copy.deepcopy(deployments[1])
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/ready"}
    with pytest.raises(kubernetes_validate.ValidationError, match="'httpGett' was unexpected"):
        kubernetes_validate.validate(typo, version, strict=True)


def test_a_cluster_without_the_operators_crds_gets_both_releases_without_their_monitors(
    project: Project,
) -> None:
    """helm refuses a whole release that holds a kind the cluster lacks: where the Prometheus
    operator's CRDs are missing (its install failed), the deploy's own arguments render the model
    and the production address without their ServiceMonitor and PrometheusRule, and with them
    where the cluster has the kinds: the address watched by the same Prometheus as the model."""
    from wms.deploy.k8s import K8sDeployer

    deployer = K8sDeployer(project, print)
    assert deployer.entry is not None
    image = "r/wms-model:v3-0123abc"
    crds = ["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"]
    crds += ["--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]
    monitors = {}
    for upgrade in (
        deployer.helm_args("model-3", image, "3", "3"),
        deployer.entry.helm_args("model-3", image, "3"),
    ):
        without = _documents(helm(*as_template(upgrade)))
        assert "Deployment" in without and not {"ServiceMonitor", "PrometheusRule"} & set(without)
        with_crds = _documents(helm(*as_template(upgrade), *crds))
        assert {"ServiceMonitor", "PrometheusRule"} <= set(with_crds)
        monitors[with_crds["Deployment"]["metadata"]["namespace"]] = with_crds
    model, entry = monitors["model-3"], monitors["wms"]
    for kind in ("ServiceMonitor", "PrometheusRule"):  # the cluster's Prometheus selects both
        assert model[kind]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert entry[kind]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = entry["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["path"] == "/_proxy/metrics" and endpoint["port"] == "http"
    service = entry["Service"]["metadata"]["labels"]
    assert entry["ServiceMonitor"]["spec"]["selector"]["matchLabels"].items() <= service.items()
    (group,) = entry["PrometheusRule"]["spec"]["groups"]
    assert {rule["alert"] for rule in group["rules"]} == {"WmsAddressFailing", "WmsAddressDown"}
    assert all('namespace="wms", service="wms-model"' in rule["expr"] for rule in group["rules"])
