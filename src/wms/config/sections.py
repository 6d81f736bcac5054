"""The settings sections, one per concern: what each key means, its default and its bounds.

`wms.config` builds them into `Settings` from flags, the environment and `wms.toml`. The
[train] section, the longest, is `wms.config.training`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from wms.sandbox import DecodeSandbox


class Section(BaseModel):
    """A settings section: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSettings(Section):
    incoming: Path = Path("data/incoming")
    pointer: Path = Path("data/dataset.json")
    size: int = Field(512, ge=16, description="side of the square training contract, in pixels")
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    auto_prepare: bool = Field(False, description="run `prepare` on incoming data before merging")
    decode_sandbox: DecodeSandbox = Field(
        "auto",
        description="decode others' images in a child with no files, network or secrets: "
        "auto (where libseccomp is), required, off",
    )


class StoreSettings(Section):
    url: str = Field(".wms/store", description="a folder, or s3://bucket/prefix")
    lock_ttl_seconds: float = Field(900, gt=0, description="a crashed writer's lock expires after this")
    lock_wait_seconds: float = Field(60, ge=0, description="how long a writer waits for another")
    workers: int = Field(8, ge=1, description="parallel blob transfers")

    @field_validator("url")
    @classmethod
    def _folder_or_url(cls, value: str) -> str:
        # `s3:/bucket` or `s3:bucket` would be taken for a folder named `s3:` in the project.
        if "://" not in value and re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", value):
            raise ValueError(
                "neither a folder nor a URL; write s3://bucket/prefix, or a folder such as .wms/store"
            )
        return value


# What MLflow can track to (a SQL database, possibly with a driver: postgresql+psycopg2, or a server).
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def tracking_uri_problem(uri: str) -> str | None:
    """Why `uri` is no MLflow tracking URI, or None; MLflow itself answers such a typo with a traceback."""
    scheme, sep, rest = uri.partition("://")
    if (
        sep
        and scheme.split("+")[0].lower() in TRACKING_SCHEMES
        and rest
        and (scheme != "sqlite" or rest[0] == "/")
    ):
        return None
    return (
        "not an MLflow tracking URI; write sqlite:///.wms/mlflow.db (a file here) "
        "or http://HOST:5000 (a server)"
    )


class TrackingSettings(Section):
    uri: str = Field("sqlite:///.wms/mlflow.db", description="MLflow tracking URI")
    artifact_root: Path = Field(Path(".wms/mlartifacts"), description="artifacts of a local MLflow")
    experiment: str = "wms"
    model_name: str = "wms-segmenter"
    pointer_dir: Path = Field(Path("models"), description="production_current.json and history")
    # `wms model prune` with no --older-than (daily, on the serving node or the GPU instance): the
    # model files of candidates that never served go once this many days old; 0 turns it off.
    prune_after_days: int = Field(180, ge=0, description="days before a never-served model's files go")

    @field_validator("uri")
    @classmethod
    def _mlflow_uri(cls, value: str) -> str:
        problem = tracking_uri_problem(value)
        if problem:
            raise ValueError(problem)
        return value


GateMetric = Literal["dice", "iou"]


def _default_gate_metrics() -> list[GateMetric]:
    return ["dice", "iou"]


class GateSettings(Section):
    metrics: list[GateMetric] = Field(default_factory=_default_gate_metrics, min_length=1)
    min_delta: float = Field(0.0, ge=0, description="a metric must improve by more than this")
    floor: float = Field(0.5, ge=0, le=1, description="Dice the first model must reach")
    # Defaults measured on the real test split (benchmarks/results/gate-calibration.json): a
    # model no better than production is promoted under 5% of the time (with min_delta alone,
    # 43%), one better by +0.02 Dice over 80%. The interval is of the 20%-trimmed mean Δ: a few
    # photos that one model misses and the other finds dominate the plain mean's spread.
    require_significant: bool = Field(True, description="the CI's lower bound of each Δ must be > 0")
    trim: float = Field(
        0.2,
        ge=0,
        lt=0.5,
        description="share of the paired Δ cut from each end for the CI (0: the mean)",
    )
    max_regression: dict[GateMetric, float] = Field(
        default_factory=dict, description="largest allowed fall of a metric's mean, e.g. {iou = 0.01}"
    )
    confidence: float = Field(
        0.95, gt=0.5, lt=1, description="confidence of the bootstrap interval (0.95: a one-sided 2.5% test)"
    )
    bootstrap_resamples: int = Field(2000, ge=2000, description="bootstrap resamples of the paired Δ")
    seed: int = 42
    # Below 5 test images the bootstrap's interval is too narrow to mean anything (with one
    # image it is a point): a candidate made exactly as good as production, from two models'
    # scores on the real test split, was promoted 10-27% of the time at 2-4 images, 4% at 5.
    min_images: int = Field(
        5, ge=1, description="fewer test images than this: too few to promote a candidate, even a first model"
    )
    on_baseline_error: Literal["fail", "floor"] = Field(
        "fail", description="production model cannot be evaluated: keep it (fail) or use the floor"
    )
    onnx_min_agreement: float = Field(
        0.999, gt=0, le=1, description="share of test pixels where the ONNX and torch masks must agree"
    )


ReadyProbe = Literal["none", "tcp", "http", "runner"]


class ComputeSettings(Section):
    backend: Literal["local", "ec2"] = "local"
    train_on: Literal["instance", "here"] = Field(
        "instance",
        description=(
            'with backend ec2, "instance": the pipeline starts the instance and trains there over SSH; '
            '"here": this process already runs on the instance (a self-hosted runner): the '
            "pipeline neither starts nor stops it, renews its own lease while it runs and drops "
            "that lease at the end"
        ),
    )
    instance_id: str = Field("", description="the EC2 instance; empty: find it by instance_tag")
    instance_tag: str = Field("Name=wms-k3s", description="KEY=VALUE tag that finds the instance")
    region: str = Field("", description="AWS region; empty: the usual AWS variables and config")
    host: str = Field("", description="address of the instance; empty: the one `address` names")
    address: Literal["public", "private"] = Field(
        "public",
        description=(
            "which of the instance's addresses to reach it at when host is empty, read from EC2 at "
            "each start: public (from outside its VPC) or private (from inside it: the split "
            "layout's serving node; a replaced instance's new address is found the same way)"
        ),
    )
    ready_probe: ReadyProbe = Field("none", description="what must answer before training starts")
    ssh_port: int = Field(22, ge=1, le=65535)
    ssh_user: str = "ubuntu"
    ssh_key: str = Field("~/.ssh/wms.pem", description="private key file (or the key itself) for SSH")
    mlflow_port: int = Field(5000, ge=1, le=65535, description="MLflow on the instance; probed at /health")
    mlflow_on_instance: bool = Field(
        True,
        description=(
            "MLflow runs on the instance (the single layout); false (split): it runs on the serving "
            "node, and the instance's status shows no MLflow address of its own"
        ),
    )
    runner_name: str = Field("wms-k3s", description="the self-hosted runner that must be online")
    runner_label: str = Field(
        "",
        description=(
            "the label of the instance's own self-hosted runner (single layout: wms-gpu): a stop keeps "
            "the instance for a job of another run that GitHub has queued for, or just begun on, that "
            "runner, leased to its run for one lease_minutes; empty: no such check (GitHub not asked)"
        ),
    )
    start_timeout_seconds: float = Field(600, gt=0, description="limit of each wait while starting")
    stop_timeout_seconds: float = Field(600, gt=0, description="limit of the wait for `stopped`")
    poll_seconds: float = Field(5, gt=0, description="pause between two looks at the instance")
    lease_minutes: float = Field(60, gt=0, description="the reaper stops an instance whose lease ran out")
    max_hold_hours: float = Field(
        12,
        gt=0,
        description=(
            "a run renews its lease for at most this long, so the instance of a run that hangs "
            "without dying is stopped one lease later"
        ),
    )
    hourly_price_usd: float = Field(0.0, ge=0, description="on-demand price per hour, for run costs")
    # Training on the instance over SSH (backend ec2, train_on instance): see wms.remote.
    remote_dir: str = Field("~/wms", description="where WMS keeps its environments, code, blobs and jobs")
    remote_python: str = Field("python3.11", description="the instance's Python that makes the environment")
    remote_tracking_uri: str = Field(
        "",
        description=(
            "the MLflow URI the training job on the instance logs to; empty: tracking.uri (the split "
            "layout from a laptop: terraform's mlflow_url_internal, the address the GPU instance reaches)"
        ),
    )
    ssh_known_hosts: str = Field(
        "", description="pinned host keys; empty: .wms/known_hosts (trust on first use)"
    )
    reconnect_seconds: float = Field(600, gt=0, description="how long a dropped SSH connection is retried")
    spot_retries: int = Field(
        3,
        ge=0,
        description=(
            "how often a training job whose instance was stopped from outside (a spot reclaim) is "
            "resumed from its checkpoint once the instance runs again; past it the run fails"
        ),
    )

    @property
    def trains_remotely(self) -> bool:
        """Training goes to the EC2 instance over SSH (wms.remote)."""
        return self.backend == "ec2" and self.train_on == "instance"

    @property
    def runs_on_instance(self) -> bool:
        """This process runs on the EC2 instance itself (the workflows' self-hosted runner)."""
        return self.backend == "ec2" and self.train_on == "here"

    @property
    def longest_run(self) -> timedelta:
        """The longest a live training run lasts: the longest it may hold the GPU instance
        (max_hold_hours), and the lease after it, when the reaper stops it."""
        return timedelta(hours=self.max_hold_hours, minutes=self.lease_minutes)

    @field_validator("instance_tag")
    @classmethod
    def _tag_is_key_value(cls, value: str) -> str:
        key, sep, tag_value = value.partition("=")
        if not sep or not key.strip() or not tag_value.strip():
            raise ValueError("write the tag as KEY=VALUE, e.g. Name=wms-k3s")
        return value

    @field_validator("remote_tracking_uri")
    @classmethod
    def _mlflow_uri(cls, value: str) -> str:
        problem = tracking_uri_problem(value) if value else None
        if problem:
            raise ValueError(problem)
        return value


class GitSettings(Section):
    host: Literal["local", "github"] = Field("local", description="local: merge here; github: PR")
    base_branch: str = "main"
    remote: str = "origin"
    data_branch_prefix: str = Field("data/", min_length=1, description="branches the pre-push hook makes")
    repository: str = Field("", description="owner/name on GitHub; empty: $GITHUB_REPOSITORY")
    api_url: str = Field("https://api.github.com", description="GitHub REST API (GraphQL is beside it)")
    labels: list[str] = Field(default_factory=lambda: ["data", "model-promotion"])
    merge_method: Literal["squash", "merge", "rebase"] = "squash"
    merge_fallback: bool = Field(True, description="merge at once where auto-merge is not allowed")


class DeploySettings(Section):
    target: Literal["local", "k8s"] = "local"
    in_pipeline: bool = Field(True, description="`wms pipeline run` deploys what it promotes")
    min_agreement: float = Field(0.99, gt=0, le=1, description="smoke mask vs expected, share of pixels")
    smoke_image: str = Field("", description="reference photo for the smoke check; empty: a synthetic one")
    ready_timeout_seconds: float = Field(300, gt=0, description="how long a new version may take to be ready")
    # k8s target: the seed's deploy-model steps
    keep_namespaces: int = Field(3, ge=1, description="newest model-* namespaces kept for rollback")
    namespace_prefix: str = Field("model-", min_length=1)
    release: str = Field("wms-model", description="Helm release name")
    chart: Path = Path("devops/helm/wms-model")
    entry_namespace: str = Field(
        "wms", description="namespace of the production address, which follows each deploy; empty: none"
    )
    entry_chart: Path = Path("devops/helm/wms-entry")
    values_file: Path = Path("infrastructure/helm-values.yaml")
    dockerfile: Path = Path("docker/Dockerfile")
    base_image_digest: str = Field(
        "",
        description="the serving image's python:3.11-slim at this digest (docker checks it); empty: the tag",
    )
    image_repository: str = Field("wms-model", description="ECR repository of the serving image")
    aws_region: str = Field("", description="ECR region; empty: the AWS_* environment's default")
    pull_secret: str = Field("ecr-pull-secret", description="imagePullSecret refreshed in the namespace")
    kubeconfig: str = Field("", description="empty: $KUBECONFIG, else ~/.kube/config")
    docker: str = Field("docker", description="docker executable (looked up on PATH)")
    helm: str = Field("helm", description="helm executable (looked up on PATH)")

    @field_validator("entry_namespace")
    @classmethod
    def _entry_namespace(cls, value: str, info: ValidationInfo) -> str:
        if value and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
            raise ValueError(
                "write a Kubernetes namespace name (lower-case letters, digits and -), or leave it empty"
            )
        prefix = info.data.get("namespace_prefix", "")
        if value and prefix and value.startswith(prefix):
            raise ValueError(
                f"it starts with namespace_prefix {prefix!r}, so the cleanup of old versions would "
                "delete it; name it otherwise"
            )
        return value

    @field_validator("base_image_digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        if value and not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
            raise ValueError(
                "write sha256: and the 64 hex digits of python:3.11-slim's index, as "
                "`docker buildx imagetools inspect python:3.11-slim` prints them, or leave it empty"
            )
        return value


class ServeSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    model: str = Field("production", description="registry alias/version, or a model folder")
    max_concurrency: int = Field(2, ge=1, description="inferences running at once; more requests wait")
    max_queue: int = Field(
        8, ge=0, description="predictions waiting for a turn beyond max_concurrency; more get 503 at once"
    )
    intra_op_threads: int = Field(1, ge=0, description="ONNX Runtime threads per inference; 0: one per core")
    max_upload_mb: float = Field(20, gt=0, description="largest accepted upload")
    upload_timeout_seconds: float = Field(
        180, gt=0, description="an upload not whole this long after its headers gets 408 and frees its place"
    )
    header_timeout_seconds: float = Field(
        10,
        gt=0,
        description="a connection whose request headers are not all in this long after it opened "
        "(or after its last answer) gets 408 and is closed",
    )
    max_pixels: int = Field(
        40_000_000, ge=1, description="largest accepted width x height, checked before decoding"
    )
    capture: Literal["off", "uncertain", "sample"] = Field(
        "off",
        description="keep photos for labelling: off; uncertain (score >= capture_threshold); sample",
    )
    capture_dir: str = Field(
        ".wms/inbox", description="where captured photos go: a folder, or s3://bucket/prefix"
    )
    capture_threshold: float = Field(0.5, ge=0, le=1, description="uncertain: capture from this score up")
    capture_sample_rate: float = Field(0.01, ge=0, le=1, description="sample: share of predictions captured")
    capture_per_minute: float = Field(
        6, ge=0, description="at most this many captures a minute (token bucket); 0.5: one every 2 minutes"
    )
    capture_max_files: int = Field(
        1000, ge=0, description="stop capturing when the inbox holds this many photos"
    )
    capture_max_mb: float = Field(500, ge=0, description="... or this many MB (photos, masks and metadata)")

    @property
    def url(self) -> str:
        """Where `wms serve`, or the local deploy's stable port, answers: http://host:port."""
        return f"http://{self.host}:{self.port}"


class MonitorSettings(Section):
    # The captured photos are serve.capture_dir's: what `wms data suggest` and `wms monitor drift` read.
    psi_threshold: float = Field(
        0.2, gt=0, description="a feature whose population stability index is over this has drifted"
    )
    min_photos: int = Field(
        30, ge=1, description="with fewer captured photos drift is reported, never flagged"
    )
    reference_photos: int = Field(
        200, ge=10, description="training photos sampled (seeded) as the reference of `wms monitor drift`"
    )
    seed: int = 42
    report_dir: Path = Field(Path(".wms/drift"), description="where `wms monitor drift` writes by default")
    textfile_dir: str = Field(
        "", description="also write wms_drift.prom here (node-exporter's textfile collector); empty: don't"
    )
