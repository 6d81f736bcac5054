"""The serving node has room, by the pods' requests, for every model pod a deploy runs at once.

The scheduler places a pod only on a node whose allocatable CPU and memory still hold its
requests beside those of the pods already there. `wms deploy` installs each model version in a
namespace of its own and deletes old ones only after the new version has answered, so while it
deploys, the node runs the newest deploy.keep_namespaces namespaces' pods, main's production's
when that namespace is not among them, and the new version's: keep_namespaces + 2 pods of
replicaCount each (a redeploy of a version already there surges one pod instead: as many).
One that does not fit stays Pending, helm's --wait runs out, --atomic uninstalls the release,
and the cleanup that would have made room never runs, so every later deploy fails the same way.
Beside them run k3s's own pods and the monitoring that monitoring.sh installs
(infrastructure/k3s/kube-prometheus-stack.yaml): each of its containers' requests counts, and
the production address (devops/helm/wms-entry), whose switch surges a second pod for a moment.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.test_infrastructure_memory import CHART_VALUES, CLUSTER_VALUES, MIB, _bytes
from tests.test_infrastructure_monitoring import stack_values

REPO = Path(__file__).resolve().parents[1]
# What k3s reports as allocatable (no reserved CPU; memory as the kernel sees it, less the
# kubelet's 100Mi eviction threshold), for the serving node types docs/aws.md and Terraform name.
NODES = {
    "t4g.medium": (2000, 3700 * MIB),
    "t4g.large": (2000, 7600 * MIB),
    "t3.medium": (2000, 3700 * MIB),
    "g4dn.xlarge": (4000, 15000 * MIB),  # the GPU instance, which also serves in layout "single"
}
# The requests of what k3s runs on every node: coredns (100m, 70Mi) and metrics-server (100m, 70Mi).
K3S_CPU_MILLI, K3S_MEMORY = 200, 140 * MIB
# What a model pod holds once it has served (resident memory of `wms serve` with the gpu recipe's
# U-Net, which the workflows train, after 100 real photos and ten of 12 megapixels, two at a time;
# it gives ONNX Runtime's working memory back after each photo, and what malloc kept once the
# last photo under way is answered: after two 39.9-megapixel photos at once it holds 219-262
# MiB, not the 729-911 it held before it did; src/wms/serve/heap.py). A request below it lets the
# scheduler put more on the node than it holds, and makes the pod the first one evicted.
SERVED_MEMORY = 400 * MIB
ENTRY_VALUES = REPO / "devops" / "helm" / "wms-entry" / "values.yaml"
# What the production address's proxy holds after serving (resident memory of
# `python -m wms.deploy.proxy` after 40 requests: 67-78 MiB).
ENTRY_SERVED_MEMORY = 80 * MIB


def _millicores(quantity: str | int | float) -> int:
    text = str(quantity)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def monitoring_requests() -> dict[str, tuple[int, int]]:
    """CPU (millicores) and memory requests of every container kube-prometheus-stack runs on the
    node, as the HelmChart's values set them; a component turned on without requests fails here."""
    values = stack_values()
    for component in ("grafana", "kubeStateMetrics"):  # on by default, off here for their memory
        assert values[component]["enabled"] is False, f"{component} is on: set its requests and count it here"
    reloader = values["prometheusOperator"]["prometheusConfigReloader"]["resources"]["requests"]
    requests = {
        "prometheus": values["prometheus"]["prometheusSpec"]["resources"]["requests"],
        "prometheus's config reloader": reloader,
        "alertmanager": values["alertmanager"]["alertmanagerSpec"]["resources"]["requests"],
        "alertmanager's config reloader": reloader,
        "operator": values["prometheusOperator"]["resources"]["requests"],
        "node-exporter": values["prometheus-node-exporter"]["resources"]["requests"],
    }
    return {name: (_millicores(r["cpu"]), _bytes(r["memory"])) for name, r in requests.items()}


def _values() -> dict[str, Any]:
    chart, cluster = (yaml.safe_load(path.read_text()) for path in (CHART_VALUES, CLUSTER_VALUES))
    requests = {**chart["resources"]["requests"], **cluster.get("resources", {}).get("requests", {})}
    return {"replicas": cluster.get("replicaCount", chart["replicaCount"]), "requests": requests}


@pytest.mark.parametrize("layout", ["split", "single"])
def test_a_deploy_fits_beside_the_namespaces_it_keeps_and_the_monitoring(
    terraform: dict[str, Any], layout: str
) -> None:
    node_type = terraform["variable"]["serving_instance_type" if layout == "split" else "instance_type"][
        "default"
    ]
    assert node_type in NODES, f"add {node_type}'s allocatable CPU and memory to NODES"
    cpu, memory = NODES[node_type]
    keep = tomllib.loads((REPO / "wms.toml").read_text())["deploy"]["keep_namespaces"]
    values = _values()
    request = _bytes(values["requests"]["memory"])
    assert request >= SERVED_MEMORY, (
        f"resources.requests.memory is {request / MIB:.0f} MiB but a pod that has served holds "
        f"{SERVED_MEMORY / MIB:.0f} MiB: raise the request"
    )
    monitoring = monitoring_requests()
    monitoring_cpu = sum(c for c, _ in monitoring.values())
    monitoring_memory = sum(m for _, m in monitoring.values())
    pods = (keep + 2) * values["replicas"]
    entry = yaml.safe_load(ENTRY_VALUES.read_text())["resources"]["requests"]
    entry_cpu, entry_memory = 2 * _millicores(entry["cpu"]), 2 * _bytes(entry["memory"])  # old and new
    assert _bytes(entry["memory"]) >= ENTRY_SERVED_MEMORY, "raise wms-entry's resources.requests.memory"
    need_cpu = K3S_CPU_MILLI + monitoring_cpu + entry_cpu + pods * _millicores(values["requests"]["cpu"])
    need_memory = K3S_MEMORY + monitoring_memory + entry_memory + pods * request
    assert need_cpu <= cpu, (
        f"{pods} model pods (deploy.keep_namespaces {keep} + main's + the new one) request {need_cpu}m CPU "
        f"with k3s's own, the production address's and the monitoring's {monitoring_cpu}m, "
        f"but a {node_type} has {cpu}m: lower "
        "resources.requests.cpu or the monitoring's requests"
    )
    assert need_memory <= memory, (
        f"{pods} model pods request {need_memory / MIB:.0f} MiB with k3s's own and the monitoring's "
        f"{monitoring_memory / MIB:.0f} MiB, but a {node_type} has {memory / MIB:.0f} MiB: lower "
        "resources.requests.memory or the monitoring's requests"
    )


def test_the_monitoring_has_memory_limits_over_its_requests() -> None:
    """A limit keeps a Prometheus that grows (more series) from taking the model pods' memory."""
    values = stack_values()
    for resources in (
        values["prometheus"]["prometheusSpec"]["resources"],
        values["alertmanager"]["alertmanagerSpec"]["resources"],
        values["prometheusOperator"]["resources"],
        values["prometheusOperator"]["prometheusConfigReloader"]["resources"],
        values["prometheus-node-exporter"]["resources"],
    ):
        assert _bytes(resources["limits"]["memory"]) >= _bytes(resources["requests"]["memory"]), resources
