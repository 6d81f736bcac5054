"""What a deploy target serves, against what main says it should: `wms deploy status`.

Main's models/production_current.json names the version; `wms deploy` serves it in namespace
`model-<version>` from an image tagged `v<version>-<commit>`, the commit its checkout was at.
The cluster serves main's production when that namespace's Service answers /ready with that
version and its pods run an image built from a commit whose image and chart inputs (the paths
release-deploy.yaml deploys on) are still main's, and no `model-*` namespace holds a release
deployed while main named another version (one by hand: its WmsModelVersionNotProduction
fires until a deploy from main replaces or removes it), and the production address
(wms.deploy.k8s_entry), where there is one, answers /ready with that version too. A few cheap
reads: the namespaces' labels, the Services' /ready and the pods' images; nothing is built,
pulled or changed.

On the local target (a laptop, `make demo`) it serves main's production when the stable port
(serve.port, the local deploy's proxy) answers /ready with that version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from wms.config import Project
from wms.errors import BackendError

if TYPE_CHECKING:
    from wms.deploy.k8s_entry import Entry
    from wms.deploy.kube import KubeClient
    from wms.vcs.mainline import MainLine

# What the image and the release are made of: a change to any of them on main is deployed by
# release-deploy.yaml (its `paths`), so a pod built before it runs code main no longer has.
SERVED_PATHS = (
    "src",
    "docker",
    "devops/helm",
    "infrastructure/helm-values.yaml",
    "pyproject.toml",
    "constraints.txt",
)


@dataclass(frozen=True)
class ServingStatus:
    """Main's production version against what its namespace serves."""

    wanted: str | None  # None: main names no production version yet
    namespace: str
    served: str | None  # the version /ready names there; None: nothing answers
    images: tuple[str, ...]  # what the pods there run
    stale: str  # why the pods' code is not main's; "" when it is (or cannot be compared)
    # (namespace, the version main named when it was deployed) where that is not what it serves
    off_main: tuple[tuple[str, str], ...] = ()
    address: str = ""  # the production address (Entry.where); "" where there is none
    address_serves: str | None = None  # the version /ready names there; None: nothing answers
    stable_url: str = ""  # the local target's stable port, which `served` was read from; "" on k8s
    traffic: str = ""  # what the address's (or the stable port's) proxy counted, in words; "" unread

    @property
    def in_sync(self) -> bool:
        if self.wanted is None:
            return True
        address_ok = not self.address or self.address_serves == self.wanted
        return self.served == self.wanted and address_ok and not self.stale and not self.off_main

    def lines(self) -> list[str]:
        if self.wanted is None:
            return ["main names no production model yet (models/production_current.json): nothing to serve"]
        if self.stable_url:
            return self._local_lines()
        served = (
            f"model {self.served}" if self.served is not None else "nothing (no ready pod answers /ready)"
        )
        lines = [
            f"wanted: model {self.wanted}, main's models/production_current.json",
            f"served: {served} in namespace {self.namespace}",
        ]
        if self.address:
            answer = (
                "nothing answers /ready" if self.address_serves is None else f"model {self.address_serves}"
            )
            lines.append(f"production address: {answer} at {self.address}")
            if self.traffic:
                lines.append(f"  since its pod started: {self.traffic}")
        if self.images:
            lines.append(f"image: {', '.join(self.images)}")
        if self.stale:
            lines.append(f"code: {self.stale}")
        for namespace, expected in self.off_main:
            lines.append(
                f"also: {namespace} was deployed while main named model {expected}; its "
                "WmsModelVersionNotProduction fires until a deploy from main "
                + ("replaces it" if namespace == self.namespace else "removes the namespace")
            )
        lines.append(
            "in sync: production serves what main names, built from main's code"
            if self.in_sync
            else "OUT OF SYNC: deploy production from main (release-deploy.yaml, or `wms deploy`)"
        )
        return lines

    def _local_lines(self) -> list[str]:
        served = "nothing answers /ready" if self.served is None else f"model {self.served}"
        return [
            f"wanted: model {self.wanted}, main's models/production_current.json",
            f"served: {served} at {self.stable_url} (the local deploy's stable port, serve.port)",
            *([f"  since its proxy started: {self.traffic}"] if self.traffic else []),
            "in sync: the stable port serves what main names"
            if self.in_sync
            else "OUT OF SYNC: run `wms deploy` to serve main's production there",
        ]


def serving_status(project: Project, kube: KubeClient | None = None) -> ServingStatus:
    """What deploy.target serves against main's production version: the cluster
    (deploy.kubeconfig's), or the local deploy's stable port."""
    from wms.vcs.mainline import MainLine

    main = MainLine(project)
    wanted = main.production_version()  # RegistryError when main's pointer names no version
    if wanted is None:
        return ServingStatus(None, "", None, (), "")
    if project.settings.deploy.target == "local":
        return _local_status(project, wanted)
    from wms.deploy.k8s import K8sDeployer
    from wms.deploy.kube import KubeClient

    deployer = K8sDeployer(project, print)
    namespace = deployer.namespace(wanted)
    release = project.settings.deploy.release
    client = kube or KubeClient.from_kubeconfig(project.settings.deploy.kubeconfig)
    served = client.served_version(namespace, release, "http")
    images: tuple[str, ...] = ()
    if served is not None:
        images = tuple(client.pod_images(namespace, {"app.kubernetes.io/instance": release}))
    stale = _stale_code(main, project, images) if served == wanted else ""
    off_main = tuple(
        (n.name, expected)
        for n in client.namespaces(project.settings.deploy.namespace_prefix)
        if n.phase != "Terminating" and (expected := n.deployed_off_main)
    )
    entry = deployer.entry
    address, address_serves, counted = "", None, ""
    if entry:
        address, address_serves, counted = (
            entry.where(),
            entry.served(client),
            _address_traffic(client, entry),
        )
    return ServingStatus(
        wanted, namespace, served, images, stale, off_main, address, address_serves, traffic=counted
    )


def _address_traffic(client: KubeClient, entry: Entry) -> str:
    """What the address's proxy counted, through the API server; "" where it cannot be read (no
    pod answers, or one from before the proxy counted)."""
    from wms.deploy.proxy import traffic

    try:
        return traffic(client.service_proxy(entry.namespace, entry.release, "http", "/_proxy/metrics").text)
    except BackendError:
        return ""


def _local_status(project: Project, wanted: str) -> ServingStatus:
    """The version the local deploy's stable port answers /ready with, against `wanted`."""
    from wms.deploy.proxy import traffic

    url = project.settings.serve.url
    try:
        answer = httpx.get(f"{url}/ready", timeout=5)
        version = answer.json().get("version") if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        version = None  # nothing there, or not a model server's answer
    try:
        counted = traffic(httpx.get(f"{url}/_proxy/metrics", timeout=5).text)
    except httpx.HTTPError:
        counted = ""
    served = None if version is None else str(version)
    return ServingStatus(wanted, "", served, (), "", stable_url=url, traffic=counted)


def _stale_code(main: MainLine, project: Project, images: tuple[str, ...]) -> str:
    """Why the pods' images are not built from main's code ("" when they are, or outside git)."""
    if main.top is None:
        return ""  # no history to compare with: the version alone decides
    head = main.ref or "HEAD"
    paths = [main.relative(project.root / name) for name in SERVED_PATHS if (project.root / name).exists()]
    if not paths:
        return ""
    reasons = []
    for image in images:
        commit = image.rpartition(":")[2].rpartition("-")[2]
        if not main.git.has_commit(commit):
            reasons.append(f"{image} was built from commit {commit}, which main's history here lacks")
            continue
        # Names only, from the trees: pairing renames would read old files' contents, which the
        # workflows' checkouts (filter: blob:none) lack and, without a token, cannot fetch.
        diff = ("diff", "--name-only", "--no-renames", commit, head, "--", *paths)
        changed = main.git.run(*diff).splitlines()
        if changed:
            shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
            reasons.append(f"{image} was built from commit {commit}; main has changed {shown} since")
    return "; ".join(reasons)
