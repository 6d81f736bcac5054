"""The k8s deploy target: the seed's deploy-model workflow, step by step, each step printed.

    wms deploy --dry-run     # the plan, with the commands it would run
    wms deploy               # ECR login -> build/push -> pull secret -> registry check -> helm
                             # -> pod ready -> health + smoke through the Service
                             # -> the production address switched -> old namespaces

Each model version gets its own namespace (`model-<version>`), so the previous versions stay
installed for a rollback until the cleanup keeps only the newest `deploy.keep_namespaces`
and the one of the version main's models/production_current.json names, which is never
removed. The cluster's one production address (wms.deploy.k8s_entry) is pointed at the new
version once it has answered correctly, and old namespaces are removed only after that.
`docker` and `helm` are found on PATH (or as configured); the Kubernetes API is spoken to
through lightkube (wms.deploy.kube).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from wms.config import Project
from wms.deploy.base import (
    SMOKE_PARAMS,
    DeployResult,
    Echo,
    agreement,
    check_agreement,
    expected_mask,
    forget_other_models,
    open_registry,
    planned_card,
    reference_photo,
    stage_model,
)
from wms.deploy.k8s_entry import MANAGED, Entry, unmonitored
from wms.deploy.k8s_image import dockerconfig_secret, ecr_login, stage_context
from wms.errors import BackendError, ConfigError, RegistryError

if TYPE_CHECKING:
    from wms.deploy.kube import KubeClient
    from wms.registry import Registry


class K8sDeployer:
    """Deploys a model version with Helm into its own namespace on a Kubernetes cluster."""

    name = "k8s"

    def __init__(self, project: Project, echo: Echo, registry: Registry | None = None) -> None:
        self.project, self.echo, self._registry = project, echo, registry
        self.cfg = project.settings.deploy
        self.build_dir = project.state_dir / "deploy" / "k8s-build"
        self.entry = Entry.of(project)  # None: no production address (deploy.entry_namespace = "")
        self._done: list[str] = []

    # -- plan ------------------------------------------------------------------------------------
    def expected_version(self, deployed: str) -> str:
        """The version main's models/production_current.json names, which the chart's alert
        compares the served one with; the deployed version where main names none yet."""
        from wms.vcs.mainline import MainLine

        try:
            return MainLine(self.project).production_version() or deployed
        except RegistryError as exc:
            raise RegistryError(f"{exc} and deploy again") from None

    def plan(self, model_ref: str = "production") -> list[str]:
        self._check_files()
        version = planned_card(self.project, self._registry, model_ref).version
        ns, image = self.namespace(version), f"<ecr>/{self.cfg.image_repository}:v{version}-<commit>"
        expected = self.expected_version(version)
        secret_in = ns if self.entry is None else f"{ns} and {self.entry.namespace}"
        return [
            f"ECR login: boto3 ecr.get_authorization_token (region {self.cfg.aws_region or 'from AWS_*'}), "
            f"`{self.cfg.docker} login --password-stdin <ecr>`",
            f"stage model {model_ref} (version {version}, sha256 checked) with the sources in "
            f"{self.build_dir}; `{self.cfg.docker} build -f {self.cfg.dockerfile} -t {image}`, "
            f"`{self.cfg.docker} push {image}` and `{self.cfg.docker} image rm {image}` (ECR keeps it)",
            f"refresh imagePullSecret {self.cfg.pull_secret} in namespace {secret_in} (created if missing)",
            f"check that model {model_ref} exists in the registry and is still version {version}",
            " ".join(self.helm_args(ns, image, version, expected)),
            f"wait for the pods of {self.cfg.release} in {ns} to be ready",
            "GET /ready and POST /predict (reference photo) through the Service; the mask must match the "
            f"model's own on {self.cfg.min_agreement:.0%} of pixels",
            *(self.entry.plan(ns, image, version, expected) if self.entry else []),
            f"delete older {self.cfg.namespace_prefix}* namespaces and any deployed while main named another "
            f"version, keeping the newest {self.cfg.keep_namespaces}"
            + ("" if expected == version else f" and {self.namespace(expected)}, main's production"),
        ]

    def namespace(self, version: str) -> str:
        return f"{self.cfg.namespace_prefix}{version}"

    def helm_args(self, namespace: str, image: str, version: str, expected: str) -> list[str]:
        """`helm upgrade --install` of `version`; `expected` is the version main names (the alerts')."""
        repository, _, tag = image.rpartition(":")
        return [
            self.cfg.helm, "upgrade", "--install", self.cfg.release, str(self.project.path(self.cfg.chart)),
            "--namespace", namespace, "--create-namespace", "--atomic", "--wait",
            "--timeout", f"{int(self.cfg.ready_timeout_seconds)}s",
            "-f", str(self.project.path(self.cfg.values_file)),
            "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
            "--set", f"imagePullSecrets[0].name={self.cfg.pull_secret}",
            "--set-string", f"model.version={version}",
            "--set-string", f"monitoring.expectedModelVersion={expected}",
        ]  # fmt: skip

    def check(self) -> None:
        """Refuse, before anything runs, what a deploy would stop at: a missing chart, values
        file or Dockerfile, no docker or helm."""
        self._check_files()
        self._tool(self.cfg.docker, "docker")
        self._tool(self.cfg.helm, "helm")

    # -- helpers ---------------------------------------------------------------------------------
    def _check_files(self) -> None:
        files = [
            (self.cfg.chart, "chart"),
            (self.cfg.values_file, "values_file"),
            (self.cfg.dockerfile, "dockerfile"),
        ]
        if self.entry is not None:
            files.append((self.cfg.entry_chart, "entry_chart"))
        for path, setting in files:
            if not self.project.path(path).exists():
                raise ConfigError(f"deploy.{setting} {path} does not exist in {self.project.root}")

    def _step(self, line: str) -> None:
        self._done.append(line)
        self.echo(f"[{len(self._done)}/{8 if self.entry is None else 9}] {line}")

    def _tool(self, name: str, setting: str) -> str:
        found = shutil.which(name)
        if not found:
            raise BackendError(f"{name!r} not found on PATH; install it or set deploy.{setting} to its path")
        return found

    def _run(self, args: list[str], stdin: str | None = None, env: dict[str, str] | None = None) -> str:
        self.echo(f"  $ {' '.join(args)}")
        try:
            done = subprocess.run(
                args,
                env=None if env is None else {**os.environ, **env},
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                cwd=self.project.root,
                check=False,
            )
        except OSError as exc:
            raise BackendError(f"cannot run {args[0]}: {exc}") from None
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BackendError(f"`{' '.join(args[:3])}` failed with exit code {done.returncode}: {last[0]}")
        return done.stdout

    def _run_as(self, tool: str, args: list[str], env: dict[str, str] | None = None) -> str:
        """`args` run with its first word replaced by the `tool` found on PATH."""
        return self._run([tool, *args[1:]], env=env)

    def _forget(self, docker: str, image: str) -> str:
        """Remove the local copy of the pushed `image`: the cluster pulls it from ECR, and every
        deploy's copy (a few hundred MB: a new commit installs the dependencies again) would stay
        on the node's disk for good. A failure only says so: the image is in ECR."""
        try:
            self._run([docker, "image", "rm", image])
        except BackendError as exc:
            return f"; its local copy stays ({exc})"
        return ""

    def _warning(self, kube: KubeClient, namespace: str, since: datetime) -> str:
        """Why the release's pods never became ready, as far as the namespace's events since say."""
        try:
            warning = kube.last_warning(namespace, since)
        except (BackendError, ConfigError):
            warning = ""
        where = f"`kubectl -n {namespace} get events`"
        return f"; its last warning: {warning} (all: {where})" if warning else f"; see {where}"

    def _unstick(self, helm: str, namespace: str, env: dict[str, str] | None) -> None:
        """Undo what a helm killed mid-operation left (a cancelled or timed-out deploy job): its
        release stays pending-install/-upgrade/-rollback, and helm refuses every later upgrade
        with "another operation (install/upgrade/rollback) is in progress". Deploys run one at
        a time (one concurrency group), so a pending release here is a dead operation's."""
        release, where = self.cfg.release, ["--namespace", namespace]
        try:
            status = json.loads(self._run([helm, "status", release, *where, "-o", "json"], env=env))
        except BackendError:
            return  # no release in this namespace yet
        except ValueError:
            return  # not helm's JSON: the upgrade says what is wrong
        state = str(status.get("info", {}).get("status", ""))
        if state == "pending-install":  # nothing ever served from it
            self._run([helm, "uninstall", release, *where, "--wait"], env=env)
        elif state in ("pending-upgrade", "pending-rollback"):  # back to the revision before it
            self._run([helm, "rollback", release, *where, "--wait"], env=env)
        else:
            return
        self.echo(f"  release {release} in {namespace} was left {state} by an interrupted helm: undone")

    def _commit(self) -> str:
        try:
            out = subprocess.run(
                ["git", "rev-parse", "--short=12", "HEAD"], cwd=self.project.root,
                capture_output=True, text=True, check=True, timeout=10,
            )  # fmt: skip
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "nogit"

    def _kube(self) -> KubeClient:
        from wms.deploy.kube import KubeClient

        return KubeClient.from_kubeconfig(self.cfg.kubeconfig)

    # -- the verbs -------------------------------------------------------------------------------
    def deploy(self, model_ref: str = "production") -> DeployResult:
        """The seed's steps in order; any failure stops before older namespaces are touched."""
        from wms.deploy.kube import EXPECTED_LABEL, VERSION_LABEL

        self._done = []
        self._check_files()
        docker = self._tool(self.cfg.docker, "docker")
        helm = self._tool(self.cfg.helm, "helm")
        kube = self._kube()
        registry = open_registry(self.project, self._registry)
        model = stage_model(registry, model_ref, self.project.state_dir / "deploy" / "models")
        version, namespace = model.version, self.namespace(model.version)
        expected = self.expected_version(version)  # read before anything is built: a bad pointer stops here

        host, user, password = ecr_login(self.cfg.aws_region)
        self._run([docker, "login", "--username", user, "--password-stdin", host], stdin=password)
        self._step(f"ECR login: token for {host}")

        image = f"{host}/{self.cfg.image_repository}:v{version}-{self._commit()}"
        context = stage_context(self.project, self.build_dir, version)
        digest = self.cfg.base_image_digest
        pin = ["--build-arg", f"BASE_DIGEST=@{digest}"] if digest else []  # docker refuses other content
        dockerfile = str(context / "docker" / "Dockerfile")
        self._run([docker, "build", *pin, "-f", dockerfile, "-t", image, str(context)])
        self._run([docker, "push", image])
        forget_other_models(self.project.state_dir / "deploy" / "models", version)  # the image has its own
        self._step(f"built and pushed {image} (model {version} baked in){self._forget(docker, image)}")

        created = kube.ensure_namespace(namespace, {**MANAGED, VERSION_LABEL: version})
        secret = dockerconfig_secret(self.cfg.pull_secret, host, user, password)
        kube.apply_secret(namespace, secret)
        also = ""
        if self.entry is not None:  # its pod runs the same image
            kube.ensure_namespace(self.entry.namespace, MANAGED)
            kube.apply_secret(self.entry.namespace, secret)
            also = f" and {self.entry.namespace}"
        self._step(
            f"refreshed imagePullSecret {self.cfg.pull_secret} in {namespace}"
            + (" (new namespace)" if created else "")
            + also
        )

        current = registry.get(model_ref)
        if current.version != version:
            raise BackendError(
                f"model {model_ref} moved from version {version} to {current.version} during the deploy; "
                "run it again"
            )
        self._step(
            f"registry: model {model_ref} is version {version} (sha256 {model.card.onnx_sha256[:12]}…)"
        )

        # helm reaches the cluster the API calls reach: deploy.kubeconfig, when set, is its KUBECONFIG.
        kubeconfig = (
            {"KUBECONFIG": str(self.project.path(self.cfg.kubeconfig))} if self.cfg.kubeconfig else None
        )
        self._unstick(helm, namespace, kubeconfig)
        started = datetime.now(UTC) - timedelta(minutes=1)  # the API server's clock may lag
        try:
            out = self._run_as(helm, self.helm_args(namespace, image, version, expected), env=kubeconfig)
        except BackendError as exc:
            raise BackendError(f"{exc}{self._warning(kube, namespace, started)}") from None
        kube.label_namespace(namespace, {VERSION_LABEL: version, EXPECTED_LABEL: expected})  # as its alert
        note = (
            ""
            if expected == version
            else (
                f" (main's production is {expected}: its alerts say so until a deploy from main, the hourly "
                "heal's in split, removes this namespace)"
            )
        )
        note += unmonitored(out)
        self._step(f"helm release {self.cfg.release} installed in {namespace}{note}")

        pods = kube.wait_pods_ready(
            namespace, {"app.kubernetes.io/instance": self.cfg.release}, self.cfg.ready_timeout_seconds
        )
        self._step(f"pods ready: {', '.join(pods)}")

        ready = kube.service_proxy(namespace, self.cfg.release, "http", "/ready").json()
        if str(ready.get("version")) != version:
            raise BackendError(
                f"the Service in {namespace} serves model {ready.get('version')}, not {version}"
            )
        photo, photo_name = reference_photo(self.project)
        answer = kube.service_proxy(
            namespace,
            self.cfg.release,
            "http",
            "/predict",
            params=SMOKE_PARAMS,
            files={"file": (photo_name, photo)},
        )
        score = agreement(answer.content, expected_mask(model, photo))
        check_agreement(score, self.cfg.min_agreement, f"the Service in {namespace}")
        self._step(
            f"health and smoke check through the Service: /ready {version}, mask agreement {score:.2%}"
        )

        url = kube.service_url(namespace, self.cfg.release, "http")
        if self.entry is not None:
            entry, switching = self.entry, expected == version  # else it stays on main's (Entry.follow)
            if switching:
                self._unstick(helm, entry.namespace, kubeconfig)
            try:
                run = partial(self._run_as, helm, env=kubeconfig)
                self._step(entry.follow(kube, run, namespace, image, version, expected))
            except BackendError as exc:
                raise BackendError(f"{exc}{self._warning(kube, entry.namespace, started)}") from None
            if switching:
                url = kube.service_url(entry.namespace, entry.release, "http")

        mains = self.namespace(expected)
        removed = self._cleanup(kube, namespace, mains)
        self._step(
            f"removed old namespaces: {', '.join(removed) or 'none'} "
            f"(kept the newest {self.cfg.keep_namespaces}"
            + ("" if mains == namespace else f" and {mains}, main's production")
            + ")"
        )
        return DeployResult(
            target=self.name,
            version=version,
            url=url,
            agreement=score,
            steps=list(self._done),
            details={
                "namespace": namespace,
                "image": image,
                "removed_namespaces": ",".join(removed),
                "production_address": self.entry.where() if self.entry else "",
            },
        )

    def _cleanup(self, kube: KubeClient, current: str, mains: str) -> list[str]:
        """Delete older model namespaces: the newest few stay for a rollback, and main's production
        always stays (a deploy of another version, by hand or before main took it, must not
        remove what main says serves). One deployed while main named another version (by hand)
        goes too: its alert would fire for as long as it stays."""
        namespaces = [n for n in kube.namespaces(self.cfg.namespace_prefix) if n.phase != "Terminating"]
        newest_first = sorted(namespaces, key=lambda n: (n.created, n.name), reverse=True)
        others = [n.name for n in newest_first if n.name != current and not n.deployed_off_main]
        keep = {current, mains, *others[: self.cfg.keep_namespaces - 1]}
        removed = []
        for ns in reversed(newest_first):  # oldest first
            if ns.name not in keep:
                kube.delete_namespace(ns.name)
                removed.append(ns.name)
        return removed

    def stop(self) -> str:
        return (
            "the k8s target keeps its releases; to remove one: "
            f"`{self.cfg.helm} uninstall {self.cfg.release} --namespace {self.cfg.namespace_prefix}<version>`"
        )
