"""Shared fixtures: an isolated project folder with tiny settings, and synthetic batches."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import struct
import sys
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from wms.cli.main import app
from wms.data.synth import synthesize

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT.parent / "shared" / "datasets" / "water-meters"


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/NAME.py as a module (benchmarks/ is not a package), for tests of its pure parts."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# Small enough that a training run takes seconds on two CPU cores.
TINY_SETTINGS = """
[data]
size = 64

[train]
epochs = 10
image_size = 32
batch_size = 8
learning_rate = 0.01
base_channels = 8
depth = 2

[gate]
floor = 0.0
min_images = 1  # a tiny synthetic batch holds 1 to 9 test images; tests/test_gate.py tests the rule
"""


class Quiet:
    """A pipeline reporter that shows nothing (tests read the run record instead)."""

    def stage_started(self, stage: object) -> None:
        pass

    def stage_done(self, stage: object) -> None:
        pass

    def train_reporter(self) -> None:
        return None


def png_bomb(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels but holds a few bytes of data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` are skipped, with the reason, where no CUDA device is visible."""
    gpu = [item for item in items if "gpu" in item.keywords]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (none visible); benchmarks/gpu_check.py runs it")
        for item in gpu:
            item.add_marker(skip)


POSTSCRIPT = "%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n"  # what EPS decoding hands to gs


@pytest.fixture
def ghostscript(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose PATH finds a stand-in Ghostscript first, and the file that exists
    once anything ran it (holding its arguments): a decoder that reaches `gs` leaves it behind."""
    ran = tmp_path / "gs-ran"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f'#!/bin/sh\necho "$@" >> {ran}\nexit 1\n')
    (bin_dir / "gs").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, ran


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's WMS_* variables."""
    for name in list(os.environ):
        if name.startswith("WMS_"):
            monkeypatch.delenv(name)
    # Pipelines in tests do not start servers; tests/deploy/test_pipeline_deploy.py turns it on.
    monkeypatch.setenv("WMS_DEPLOY__IN_PIPELINE", "false")


@pytest.fixture(scope="session")
def empty_tracking_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database as MLflow creates it, made once: creating one runs MLflow's
    schema migrations (3-5 s), which every project would otherwise pay again."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("tracking") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_tracking_db: Path) -> Path:
    """An empty project with tiny settings; the current folder during the test.

    Its `.wms/mlflow.db` is a copy of a fresh, empty one (what MLflow would create on first use).
    """
    root = tmp_path / "project"
    (root / ".wms").mkdir(parents=True)
    (root / "wms.toml").write_text(TINY_SETTINGS)
    shutil.copyfile(empty_tracking_db, root / ".wms" / "mlflow.db")
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def make_batch(tmp_path: Path) -> Callable[..., Path]:
    """Write a synthetic batch of pairs (64 px) and return its folder."""

    def make(name: str = "batch", count: int = 80, seed: int = 1, size: int = 64) -> Path:
        out = tmp_path / name
        synthesize(out, count=count, size=size, seed=seed)
        return out

    return make


@pytest.fixture
def cli() -> Callable[..., object]:
    """Invoke `wms ARGS...` in-process; returns click's Result."""
    runner = CliRunner()

    def invoke(*args: str) -> object:
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 API (moto's server) on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(aws_env: str) -> str:
    """A fresh bucket; boto3/s3fs find the endpoint and credentials in the usual AWS variables."""
    import boto3

    bucket = f"wms-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return bucket


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(url: str, proc: Any, log: Path, what: str, seconds: float = 120) -> None:
    """Poll `url` until it answers 200; fail with the tail of `log` when `proc` exits or time runs out.

    The one readiness loop of the servers tests start (mlflow server, wms serve, mlflow models serve).
    """
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass  # not listening yet, or an HTTP error status (urllib raises those as OSError)
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not get ready at {url}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@contextmanager
def running_mlflow_server(db: Path, artifacts: Path) -> Iterator[str]:
    """`mlflow server` as mlflow.service runs it (the SQLite file `db`, artifacts proxied into
    `artifacts`) on a free loopback port, stopped on the way out.

    Its temporary folder is db's: each server leaves MLflow's lock file (`db_init_lock-<hash>`)
    there, which would otherwise stay in /tmp after the test.
    """
    import subprocess

    port = _free_port()
    log_path = db.parent / "server.log"
    with log_path.open("a") as log:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("mlflow")),
                "server",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--backend-store-uri=sqlite:///{db}",
                f"--artifacts-destination={artifacts}",
                "--workers=1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(db.parent)},
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(f"{url}/health", server, log_path, "mlflow server")
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, empty_tracking_db: Path) -> Iterator[str]:
    """A real `mlflow server` (SQLite backend, proxied artifacts) on a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    shutil.copyfile(empty_tracking_db, root / "mlflow.db")  # its schema already migrated
    with running_mlflow_server(root / "mlflow.db", root / "artifacts") as url:
        yield url


@pytest.fixture(params=["server"])
def tracking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on a real `mlflow server` (every other test uses the embedded SQLite store;
    add "sqlite" to the params to run it on both)."""
    if request.param == "server":
        url = request.getfixturevalue("mlflow_server")
        name = f"wms-{uuid.uuid4().hex[:8]}"  # one server for the session: keep tests apart
        monkeypatch.setenv("WMS_TRACKING__URI", url)
        monkeypatch.setenv("WMS_TRACKING__EXPERIMENT", name)
        monkeypatch.setenv("WMS_TRACKING__MODEL_NAME", name)
    return str(request.param)


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The usual AWS variables pointed at moto's server; returns its endpoint."""
    for name, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    return moto_endpoint


class Ec2Box:
    """An EC2 instance on moto with a Name tag of its own, and a look at its state and tags."""

    def __init__(self, client: Any, name: str) -> None:
        self.client, self.name = client, name
        reply = client.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            InstanceType="g4dn.xlarge",
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}],
        )
        self.id: str = reply["Instances"][0]["InstanceId"]

    @property
    def tag(self) -> str:
        return f"Name={self.name}"

    def describe(self) -> dict[str, Any]:
        return dict(self.client.describe_instances(InstanceIds=[self.id])["Reservations"][0]["Instances"][0])

    def state(self) -> str:
        return str(self.describe()["State"]["Name"])

    def tags(self) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in self.describe().get("Tags", [])}


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials anywhere botocore looks, and no instance metadata to ask."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def ec2_box(aws_env: str) -> Iterator[Ec2Box]:
    """A stopped instance (as between two runs), terminated after the test."""
    import boto3

    box = Ec2Box(boto3.client("ec2"), f"wms-test-{uuid.uuid4().hex[:8]}")
    box.client.stop_instances(InstanceIds=[box.id])
    yield box
    box.client.terminate_instances(InstanceIds=[box.id])


# -- served models: a tiny exported model, registered like a training run registers it --------


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder (model.pt, model.json, model.onnx) trained for seconds on synthetic meters.

    Its threshold is set where about a tenth of a synthetic photo is foreground, so masks have
    edges to misalign (an untrained model's masks are all one value and agree trivially).
    """
    import json

    import numpy as np

    from wms.config import TrainSettings
    from wms.data.pairs import find_pairs
    from wms.train.export import export_onnx
    from wms.train.loop import train
    from wms.train.preprocess import image_to_array, open_image
    from wms.train.segmenter import ONNX_FILE, SPEC_FILE

    root = tmp_path_factory.mktemp("served")
    synthesize(root / "data", count=24, size=64, seed=1)
    pairs = find_pairs(root / "data").pairs
    settings = TrainSettings(image_size=32, base_channels=4, depth=2, batch_size=8, epochs=3, device="cpu")
    segmenter = train(settings, pairs[:18], pairs[18:]).segmenter
    folder = root / "model"
    segmenter.save(folder)
    export_onnx(segmenter, folder / ONNX_FILE)
    batch = np.stack([image_to_array(open_image(p.image), 32) for p in pairs[18:]])
    threshold = float(np.quantile(segmenter.probabilities(batch).numpy(), 0.9))
    spec = json.loads((folder / SPEC_FILE).read_text())
    (folder / SPEC_FILE).write_text(json.dumps({**spec, "threshold": threshold}))
    return folder


def _perturbed_export(segmenter: Any, path: Path) -> None:
    """Export with the output layer's sign flipped: a valid ONNX file whose masks disagree."""
    import torch

    from wms.train.export import export_onnx

    last = [m for m in segmenter.model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        for tensor in (last.weight, last.bias):
            tensor.neg_()
        try:
            export_onnx(segmenter, path)
        finally:
            for tensor in (last.weight, last.bias):
                tensor.neg_()


@pytest.fixture(scope="session")
def perturbed_export() -> Callable[[Any, Path], None]:
    """`perturbed_export(segmenter, path)`: like export_onnx, but the export disagrees with torch."""
    return _perturbed_export


def _register_model(
    project_root: Path,
    folder: Path,
    promote: bool = True,
    mlmodel: bool = True,
    dataset_version: str = "ds-test",
    **tags: str,
) -> str:
    """Log `folder` as a run's model (with its ONNX hash, as training does) and register it.

    With `mlmodel=False` the files are logged bare, as versions were before they were MLflow models.
    """
    import hashlib

    from wms.config import load_settings
    from wms.registry import MlflowRegistry

    registry = MlflowRegistry(load_settings(start=project_root))
    onnx = folder / "model.onnx"
    sha = hashlib.sha256(onnx.read_bytes()).hexdigest() if onnx.is_file() else ""
    with registry.start_run("test", {"wms.dataset_version": dataset_version}) as run:
        run.log_metrics({"test_dice": 0.8, "test_iou": 0.7})
        if mlmodel:
            run.log_model(folder)
        else:
            run.log_artifacts(folder, "model")
        run.set_tags(({"wms.onnx_sha256": sha} if sha else {}) | tags)
    record = registry.register(run.run_id, {"dataset_version": dataset_version})
    if promote:
        registry.promote(record.version)
    return record.version


@pytest.fixture(scope="session")
def register_model() -> Callable[..., str]:
    """`register_model(root, folder, promote=True, mlmodel=True, dataset_version=..., **tags)` -> version."""
    return _register_model


@pytest.fixture
def served_project(project_dir: Path, exported_model: Path) -> Path:
    """A project whose registry holds the tiny model as version 1, in production."""
    _register_model(project_dir, exported_model)
    return project_dir


class LiveServer:
    """An ASGI app on real uvicorn, on a free loopback port, in a background thread; `options`
    go to uvicorn.Config."""

    def __init__(self, app: object, **options: Any) -> None:
        import socket
        import threading

        import uvicorn

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, **{"log_level": "warning", "lifespan": "on", **options})  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        import time

        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


@pytest.fixture(scope="session")
def live_server() -> Callable[..., LiveServer]:
    """Start an ASGI app on real uvicorn: `with live_server(app) as server: server.url`."""
    return LiveServer


CHROMIUM, CHROMEDRIVER = (
    shutil.which("chromium") or shutil.which("chromium-browser"),
    shutil.which("chromedriver"),
)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium driven by selenium for every page test (skipped, with how to fix, without it)."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "chromium and chromedriver not on PATH; `make browser` installs them (chromium, chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


TERRAFORM_DIR = REPO_ROOT / "infrastructure" / "terraform"


def _without_markers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_markers(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_without_markers(v) for v in value]
    return value


@pytest.fixture(scope="session")
def terraform() -> dict[str, dict[str, Any]]:
    """Every block of infrastructure/terraform/*.tf by kind and address, parsed without providers.

    {"resource": {"aws_instance.gpu": {...}}, "data": {...}, "variable": {...}, "locals": {...}};
    expressions stay strings as written ("${var.instance_type}").
    """
    import hcl2
    from hcl2 import SerializationOptions

    options = SerializationOptions(strip_string_quotes=True, with_comments=False)
    blocks: dict[str, dict[str, Any]] = {}
    for path in sorted(TERRAFORM_DIR.glob("*.tf")):
        parsed = _without_markers(hcl2.loads(path.read_text(), serialization_options=options))
        for kind, entries in parsed.items():
            for entry in entries:
                if kind in ("resource", "data"):
                    for rtype, named in entry.items():
                        for name, body in named.items():
                            blocks.setdefault(kind, {})[f"{rtype}.{name}"] = body
                else:
                    for name, body in entry.items():
                        blocks.setdefault(kind, {})[name] = body
    return blocks


def interrupted_after(epoch: int) -> Any:
    """A training reporter that stops the run as Ctrl-C would, once `epoch` is done."""
    from wms.train.progress import SilentReporter

    class StopAfter(SilentReporter):
        def epoch_done(self, done: int, metrics: dict[str, float]) -> None:
            if done == epoch:
                raise KeyboardInterrupt

    return StopAfter()


@pytest.fixture
def github_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """$GITHUB_OUTPUT and $GITHUB_STEP_SUMMARY, as a workflow step has them: (output, summary)."""
    output, summary = tmp_path / "github_output", tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    return output, summary
