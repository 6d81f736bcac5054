"""The settings sections, one per concern: what each key means, its default and its bounds.

`wms.config` builds them into `Settings` from flags, the environment and `wms.toml`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wms.train.recipes import RECIPES


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

    @field_validator("uri")
    @classmethod
    def _mlflow_uri(cls, value: str) -> str:
        problem = tracking_uri_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class TrainSettings(Section):
    recipe: str = Field(
        "",
        description="a named set of the keys below (wms.train.recipes): cpu or gpu; empty: none",
    )
    architecture: str = Field(
        "unet",
        description="unet (plain, scaled by base_channels and depth), or a U-Net on an ImageNet "
        "encoder: unet-mobilenet_v2, unet-resnet18 (written in plain torch: smp and timm need "
        "torchvision, which this torch build cannot run; image_size a multiple of 32; depth unused)",
    )
    encoder_weights: Literal["none", "imagenet"] = Field(
        "none",
        description="imagenet: start the encoder from torchvision's ImageNet weights, downloaded "
        "once into torch's hub cache (needs internet, or the file placed there); none: random",
    )
    epochs: int = Field(12, ge=0, description="0 logs an untrained model (useful to test the gate)")
    image_size: int = Field(128, ge=16, le=2048)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    base_channels: int = Field(16, ge=2)
    depth: int = Field(3, ge=1, le=6)
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: fp32 on CPU, bf16 on a GPU with it, else fp16 with loss scaling"
    )
    compile: bool = Field(False, description="torch.compile the model (slower start, faster steps)")
    devices: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        1, description="processes under DDP (wms train starts torchrun); auto: every visible GPU"
    )
    threshold: float = Field(0.5, gt=0, lt=1)
    tta: bool = Field(
        False,
        description="the model predicts the mean of the photo and its mirror image (kept in model.json: "
        "evaluate, predict, the gate and serving all use it); twice the inference time",
    )
    patience: int = Field(0, ge=0, description="stop after this many epochs without a better val Dice")
    max_minutes: float = Field(0, ge=0, description="training time budget; 0: none")
    augment_rotation: float = Field(10.0, ge=0, le=45, description="largest random rotation, in degrees")
    augment_quarter_turns: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of training images turned by a random 90, 180 or 270 degrees (0: none; "
        "true means 0.75, every quarter alike)",
    )
    augment_zoom: float = Field(
        0.0, ge=0, lt=1, description="largest random zoom in or out of a training image (0.3: 0.7x to 1.3x)"
    )
    early_scale: float = Field(
        1.0,
        gt=0,
        le=1,
        description="train the first half (of the steps or the time budget) at this share of image_size "
        "(0.67: 192 -> 128 px), then at image_size: more epochs in the same time; 1: off",
    )
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="validate and keep an exponential moving average of the weights, updated each step "
        "with this decay (0.995: about the last 200 steps); 0: off, the weights as trained",
    )
    loss: Literal["bce_dice", "bce_lovasz", "focal_tversky"] = Field(
        "bce_dice",
        description="bce_dice: BCE plus per-image soft Dice; bce_lovasz: BCE plus the Lovász hinge "
        "(per-image IoU); focal_tversky: missed window pixels cost more (wms.train.losses)",
    )
    finish_loss: Literal["none", "bce_dice", "bce_lovasz", "focal_tversky"] = Field(
        "none",
        description="train the last finish_share of training (of the steps or the time budget) with "
        "this loss instead (bce_lovasz: fine-tune for IoU, as Berman et al. do); none: off",
    )
    finish_share: float = Field(
        0.25, gt=0, lt=1, description="the share at the end of training that uses finish_loss"
    )
    refine_epochs: int = Field(
        0,
        ge=0,
        description="train a second stage after the first network: passes over the training photos' "
        "windows, cropped (wms.train.second_stage); 0: none, one network",
    )
    refine_minutes: float = Field(0, ge=0, description="the second stage's time budget; 0: none")
    refine_size: int = Field(160, ge=16, le=1024, description="the second stage's input side, px")
    refine_depth: int = Field(0, ge=0, le=6, description="the second stage's U-Net depth; 0: depth's")
    refine_margin: float = Field(1.4, ge=1, le=4, description="a crop's side / the found window's length")
    refine_align: bool = Field(True, description="turn each crop so that the window's long axis lies level")
    cache_dir: Path = Field(Path(".wms/cache"), description="decoded uint8 arrays, memory-mapped")
    cache_max_gb: float = Field(
        5, ge=0, description="the cache's size; least recently used arrays go first (0: only the run's own)"
    )
    export_onnx: bool = Field(True, description="log an ONNX export beside the weights (serving uses it)")

    @field_validator("augment_quarter_turns", mode="before")
    @classmethod
    def _turns_from_a_flag(cls, value: object) -> object:
        # Once a flag: on, each of the four quarters was drawn alike, so three in four were turned.
        flag = value.strip().lower() if isinstance(value, str) else value
        if isinstance(flag, bool) or flag in ("true", "false"):
            return 0.75 if flag in (True, "true") else 0.0
        return value

    @field_validator("recipe")
    @classmethod
    def _recipe_is_known(cls, value: str) -> str:
        if value and value not in RECIPES:
            raise ValueError(f'unknown recipe {value!r}; use one of: {", ".join(RECIPES)} (or "" for none)')
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
    host: str = Field("", description="address of the instance; empty: its public (Elastic) IP")
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
    values_file: Path = Path("infrastructure/helm-values.yaml")
    dockerfile: Path = Path("docker/Dockerfile")
    image_repository: str = Field("wms-model", description="ECR repository of the serving image")
    aws_region: str = Field("", description="ECR region; empty: the AWS_* environment's default")
    pull_secret: str = Field("ecr-pull-secret", description="imagePullSecret refreshed in the namespace")
    kubeconfig: str = Field("", description="empty: $KUBECONFIG, else ~/.kube/config")
    docker: str = Field("docker", description="docker executable (looked up on PATH)")
    helm: str = Field("helm", description="helm executable (looked up on PATH)")


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
