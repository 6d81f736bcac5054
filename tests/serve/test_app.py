"""The service on real uvicorn: masks aligned with the photo, hostile input refused with 4xx JSON."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import png_bomb

from wms.config import ServeSettings, load_settings
from wms.data.synth import synth_pair
from wms.errors import RegistryError
from wms.serve.app import create_app
from wms.serve.fetch import load_model
from wms.serve.model import CARD_FILE, ModelCard, ServedModel, load_folder
from wms.train.export import OnnxSegmenter
from wms.train.preprocess import open_image
from wms.uncertainty import VERDICTS, assess

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "water-meters"
SETTINGS = ServeSettings(max_upload_mb=3, max_pixels=4_000_000, max_concurrency=2, intra_op_threads=1)
EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def server(exported_model: Path, live_server: Callable[[object], Any]) -> Iterator[str]:
    with live_server(create_app(load_folder(exported_model), SETTINGS)) as live:
        yield live.url


def _mask(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert("L")) > 127


def _in_process(exported_model: Path, photo: Path) -> np.ndarray:
    return OnnxSegmenter.load(exported_model, threads=1).predict_masks([open_image(photo)])[0]


def _rotated_jpeg(path: Path) -> Image.Image:
    """A landscape photo stored turned on its side with EXIF orientation 6; returns what a viewer shows."""
    shown = synth_pair(seed=5, index=0, size=256)[0].crop((0, 48, 256, 208))  # 256x160
    stored = shown.transpose(Image.Transpose.ROTATE_90)  # exif_transpose turns it back by 270
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())
    return shown


def test_the_mask_is_aligned_with_the_photo_after_exif_orientation(
    server: str, exported_model: Path, tmp_path: Path
) -> None:
    photo = tmp_path / "sideways.jpg"
    shown = _rotated_jpeg(photo)
    answer = httpx.post(f"{server}/predict", files={"file": ("sideways.jpg", photo.read_bytes())})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    assert 0 <= float(answer.headers["x-uncertainty"]) <= 1 and answer.headers["x-verdict"] in VERDICTS
    mask = _mask(answer.content)
    assert mask.shape == (shown.height, shown.width) == (160, 256)
    expected = _in_process(exported_model, photo)
    assert 0.01 < expected.mean() < 0.99, "the test model should draw edges, not a constant mask"
    assert (mask == expected).mean() >= 0.999


@pytest.mark.realdata
def test_a_real_photo_gives_a_mask_at_its_size(server: str, exported_model: Path) -> None:
    if not (REAL_DATA / "images").is_dir():
        pytest.skip(f"real photos not found at {REAL_DATA} (shared dataset absent)")
    rotated = []
    for path in sorted((REAL_DATA / "images").glob("*.jpg"))[:200]:
        with Image.open(path) as img:
            if img.getexif().get(EXIF_ORIENTATION, 1) in (6, 8):
                rotated.append(path)
                break
    photo = rotated[0] if rotated else sorted((REAL_DATA / "images").glob("*.jpg"))[0]
    answer = httpx.post(f"{server}/predict?format=json", files={"file": (photo.name, photo.read_bytes())})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    mask = _mask(base64.b64decode(body["mask_png_base64"]))
    shown = open_image(photo)
    assert mask.shape == (shown.height, shown.width) == (body["height"], body["width"])
    assert (mask == _in_process(exported_model, photo)).mean() >= 0.999


def test_json_answer_describes_the_mask(server: str, exported_model: Path, tmp_path: Path) -> None:
    photo = tmp_path / "p.jpg"
    _rotated_jpeg(photo)
    body = httpx.post(f"{server}/predict?format=json", files={"file": ("p.jpg", photo.read_bytes())}).json()
    mask = _mask(base64.b64decode(body["mask_png_base64"]))
    assert body["foreground_fraction"] == pytest.approx(mask.mean(), abs=1e-5)
    ys, xs = np.nonzero(mask)
    assert body["bbox"] == {
        "x": int(xs.min()),
        "y": int(ys.min()),
        "width": int(xs.max() - xs.min() + 1),
        "height": int(ys.max() - ys.min() + 1),
    }
    assert body["model_version"].startswith("local:") and body["latency_ms"] > 0
    onnx = OnnxSegmenter.load(exported_model, threads=1)
    (prob,) = onnx.probability_maps([open_image(photo)])
    assert body["uncertainty"] == assess(prob, onnx.spec.threshold).to_dict()
    assert body["uncertainty"]["verdict"] in VERDICTS


def _deep_copies(gray: Image.Image) -> dict[str, bytes]:
    """The same grayscale photo as 8-bit PNG, 16-bit PNG (I;16) and float TIFF (F, 0-1)."""
    pixels = np.asarray(gray, np.uint16)
    images = {
        "8-bit png": (gray, "PNG"),
        "16-bit png": (Image.fromarray(pixels * 257), "PNG"),
        "float tiff": (Image.fromarray(pixels.astype(np.float32) / 255), "TIFF"),
    }
    out = {}
    for name, (image, fmt) in images.items():
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        out[name] = buffer.getvalue()
    return out


def test_16_bit_and_float_photos_get_the_mask_of_their_8_bit_copy(server: str) -> None:
    copies = _deep_copies(synth_pair(seed=3, index=0, size=128)[0].convert("L"))
    assert Image.open(io.BytesIO(copies["16-bit png"])).mode == "I;16"
    assert Image.open(io.BytesIO(copies["float tiff"])).mode == "F"
    masks = {}
    for name, data in copies.items():
        answer = httpx.post(f"{server}/predict", files={"file": (name, data)}, timeout=30)
        assert answer.status_code == 200, answer.text
        masks[name] = _mask(answer.content)
    assert 0.01 < masks["8-bit png"].mean() < 0.99
    for name in ("16-bit png", "float tiff"):
        assert (masks[name] == masks["8-bit png"]).mean() >= 0.999, name


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    synth_pair(seed=1, index=0, size=128)[0].save(buffer, "JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


HOSTILE: dict[str, tuple[dict[str, Any], int, str]] = {
    "bomb over serve.max_pixels": (
        {"files": {"file": ("b.png", png_bomb(5000, 5000))}},
        413,
        "pixels",
    ),
    "bomb over Pillow's own limit": (
        {"files": {"file": ("b.png", png_bomb(100_000, 100_000))}},
        413,
        "decompression bomb",
    ),
    "text file": ({"files": {"file": ("notes.txt", b"just some words\n" * 20)}}, 415, "not an image"),
    "empty file": ({"files": {"file": ("empty.jpg", b"")}}, 400, "empty"),
    "truncated jpeg": ({"files": {"file": ("cut.jpg", _truncated_jpeg())}}, 400, "truncated"),
    "wrong field name": ({"files": {"photo": ("p.jpg", _truncated_jpeg())}}, 422, "field 'file'"),
    "no body at all": ({}, 422, "field 'file'"),
    "not multipart": (
        {"content": b"\xff\xd8 raw jpeg bytes", "headers": {"content-type": "image/jpeg"}},
        422,
        "file",
    ),
    "upload over serve.max_upload_mb": (
        {"files": {"file": ("big.jpg", b"\xff" * (4 * 2**20))}},
        413,
        "limit",
    ),
    "bad format parameter": (
        {"files": {"file": ("p.jpg", b"x")}, "params": {"format": "gif"}},
        422,
        "format",
    ),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_input_gets_a_4xx_json_error(server: str, case: str) -> None:
    kwargs, status, words = HOSTILE[case]
    answer = httpx.post(f"{server}/predict", timeout=30, **kwargs)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert words in answer.json()["error"]


def test_health_ready_model_and_metrics(server: str, tmp_path: Path) -> None:
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server}/ready").json()["ready"] is True
    model = httpx.get(f"{server}/model").json()
    assert model["image_size"] == 32 and model["verified"] is False
    httpx.post(f"{server}/predict", files={"file": ("t.txt", b"text")})
    metrics = httpx.get(f"{server}/metrics").text
    assert 'wms_http_requests_total{method="POST",route="/predict",status="415"}' in metrics
    assert 'wms_http_errors_total{route="/predict",status="415"}' in metrics
    assert "wms_http_request_duration_seconds_bucket" in metrics
    assert 'wms_model_info{version="local:model"} 1.0' in metrics
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and 'id="file"' in page.text


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on /metrics, keyed by name and sorted labels."""
    text = httpx.get(f"{url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_each_prediction_counts_its_foreground_fraction(server: str, tmp_path: Path) -> None:
    photo = tmp_path / "p.jpg"
    _rotated_jpeg(photo)
    before = _scrape(server)
    body = httpx.post(f"{server}/predict?format=json", files={"file": ("p.jpg", photo.read_bytes())}).json()
    assert httpx.post(f"{server}/predict", files={"file": ("t.txt", b"text")}).status_code == 415
    after = _scrape(server)
    fraction = float(_mask(base64.b64decode(body["mask_png_base64"])).mean())
    assert 0 < fraction < 1

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    family = "wms_predicted_foreground_fraction"
    assert grew(f"{family}_count") == 1  # the refused upload is not a prediction
    assert grew(f"{family}_sum") == pytest.approx(fraction, abs=1e-9)
    buckets = {float(dict(key[1])["le"]) for key in after if key[0] == f"{family}_bucket"}
    assert {0.0, 1.0, float("inf")} <= buckets
    for le in buckets:  # cumulative: the photo is in every bucket from its own upward
        assert grew(f"{family}_bucket", le=str(le) if le != float("inf") else "+Inf") == (fraction <= le)
    # Its uncertainty and region count land in their histograms, as the JSON answer gave them.
    for family, value in (
        ("wms_prediction_uncertainty", body["uncertainty"]["score"]),
        ("wms_prediction_regions", body["uncertainty"]["regions"]),
    ):
        assert grew(f"{family}_count") == 1
        assert grew(f"{family}_sum") == pytest.approx(value, abs=1e-4)


def test_ready_follows_the_app_and_model_info_carries_the_test_dice(exported_model: Path) -> None:
    sha = load_folder(exported_model).card.onnx_sha256
    card = ModelCard(version="7", onnx_sha256=sha, metrics={"test_dice": 0.86341, "test_iou": 0.8})
    app = create_app(load_folder(exported_model, card), SETTINGS)

    async def ready_and_gauge(client: httpx.AsyncClient) -> tuple[int, str]:
        gauge = re.search(r"^wms_ready (\S+)$", (await client.get("/metrics")).text, re.M)
        assert gauge is not None
        return (await client.get("/ready")).status_code, gauge[1]

    async def start_and_stop() -> tuple[list[tuple[int, str]], str]:
        transport = httpx.ASGITransport(app=app)  # requests only: the lifespan is run below
        async with httpx.AsyncClient(transport=transport, base_url="http://wms") as client:
            states = [await ready_and_gauge(client)]
            async with app.router.lifespan_context(app):
                states.append(await ready_and_gauge(client))
                scrape = (await client.get("/metrics")).text
            states.append(await ready_and_gauge(client))
        return states, scrape

    states, scrape = anyio.run(start_and_stop)
    assert states == [(503, "0.0"), (200, "1.0"), (503, "0.0")]  # starting, serving, shut down
    assert 'wms_model_info{test_dice="0.8634",version="7"} 1.0' in scrape


def test_a_changed_model_file_is_refused(
    exported_model: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(exported_model, folder)
    good = load_folder(folder).card
    ModelCard(version="7", onnx_sha256=good.onnx_sha256).write(folder)
    assert load_folder(folder).verified
    with (folder / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(RegistryError, match=r"refusing to serve model 7: .*sha256"):
        load_folder(folder)
    result: Any = cli("serve", "--model", str(folder), "--port", "1")
    assert result.exit_code == 1
    assert "refusing to serve model 7" in result.output and "Traceback" not in result.output
    assert json.loads((folder / CARD_FILE).read_text())["version"] == "7"


def test_a_taken_port_is_one_clear_line(exported_model: Path, cli: Callable[..., Any]) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result: Any = cli("serve", "--model", str(exported_model), "--port", str(port))
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.output
    assert "pass --port" in result.output and "Traceback" not in result.output


def test_registry_versions_are_fetched_and_verified(
    served_project: Path, exported_model: Path, register_model: Callable[..., str]
) -> None:
    project = load_settings(start=served_project)
    served = load_model(project, "production", threads=1)
    assert served.verified and served.version == "1"
    assert served.card.dataset_version == "ds-test" and served.card.metrics["test_dice"] == pytest.approx(0.8)
    # A run that recorded another hash (the file was replaced after training) is refused.
    version = register_model(served_project, exported_model, promote=False, **{"wms.onnx_sha256": "0" * 64})
    with pytest.raises(RegistryError, match=r"model\.onnx has sha256 .* do not use it"):
        load_model(project, version)


def test_serving_never_imports_torch(exported_model: Path) -> None:
    code = f"""
import sys
from starlette.testclient import TestClient
import wms.cli.main
from wms.config import ServeSettings
from wms.serve.app import create_app
from wms.serve.model import load_folder
from wms.deploy.proxy import create_proxy
app = create_app(load_folder(__import__("pathlib").Path({str(exported_model)!r})), ServeSettings())
with TestClient(app) as client:
    png = open({str(exported_model / "model.onnx")!r}, "rb").read()[:0]
    client.post("/predict", files={{"file": ("p.png", png)}})
print(sorted(m for m in ("torch", "mlflow") if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


class _SlowSegmenter:
    """Stands in for the model: takes INFERENCE_SECONDS and counts how many calls overlap."""

    def __init__(self, spec: Any) -> None:
        self.spec, self.running, self.most = spec, 0, 0
        self.lock = threading.Lock()

    def probability_maps(self, images: list[Image.Image]) -> list[np.ndarray]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(INFERENCE_SECONDS)
        with self.lock:
            self.running -= 1
        return [np.zeros((img.height, img.width), np.float32) for img in images]


INFERENCE_SECONDS = 1.0


def test_inference_is_bounded_and_keeps_the_server_responsive(
    exported_model: Path, live_server: Callable[[object], Any], tmp_path: Path
) -> None:
    real = load_folder(exported_model)
    slow = _SlowSegmenter(real.segmenter.spec)
    app = create_app(ServedModel(slow, real.card, real.verified), ServeSettings(max_concurrency=2))  # type: ignore[arg-type]
    photo = tmp_path / "p.jpg"
    _rotated_jpeg(photo)
    # One client for every request, made before anything is timed: building clients (their TLS
    # contexts) on a loaded machine takes longer than the answers and is not the server's time.
    with live_server(app) as live, ThreadPoolExecutor(5) as pool, httpx.Client(timeout=30) as client:
        posts = [
            pool.submit(client.post, f"{live.url}/predict", files={"file": ("p.jpg", photo.read_bytes())})
            for _ in range(5)
        ]
        deadline = time.monotonic() + 20
        while slow.running < 2 and time.monotonic() < deadline:  # an event loop running the model
            time.sleep(0.01)  # would never have two inferences under way
        assert slow.running == 2, "two inferences never ran at once"
        started = time.perf_counter()
        assert client.get(f"{live.url}/health").status_code == 200
        health_seconds = time.perf_counter() - started
        assert all(p.result().status_code == 200 for p in posts)
    assert slow.most == 2  # serve.max_concurrency
    # Answered while both slots are busy, well within one inference: the loop does not wait on it.
    assert health_seconds < INFERENCE_SECONDS / 2
