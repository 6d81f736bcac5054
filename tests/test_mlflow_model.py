"""Registered versions as MLflow models: `mlflow models serve` and `mlflow.pyfunc.load_model`
give the masks of `wms serve`; versions registered as bare files still work and are migrated."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tests.conftest import REAL_DATA, _free_port, wait_until_ready

from wms.config import load_settings
from wms.data.synth import synth_pair
from wms.errors import RegistryError
from wms.serve.fetch import load_model
from wms.serve.imaging import decode_upload

EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real photo stored turned on its side (EXIF orientation 6 or 8), when the shared dataset is
    here; else (a checkout without it, as in CI) a synthetic meter stored the same way."""
    real = sorted((REAL_DATA / "unlabelled").glob("*.jpg")) + sorted((REAL_DATA / "images").glob("*.jpg"))
    for path in real:
        with Image.open(path) as img:
            if img.getexif().get(EXIF_ORIENTATION, 1) in (6, 8):
                return path
    path = tmp_path_factory.mktemp("photo") / "sideways.jpg"
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    shown = synth_pair(seed=7, index=0, size=256)[0].crop((0, 48, 256, 208))
    stored = shown.transpose(Image.Transpose.ROTATE_90)  # EXIF orientation 6 turns it back
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


def _png_mask(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert("L")) > 127


def _served_mask(project_dir: Path, photo: Path) -> np.ndarray:
    """What `wms serve` answers for the photo: its decoding, the production model's verified export."""
    project = load_settings(start=project_dir)
    served = load_model(project, "production", threads=1)
    upload = decode_upload(photo.read_bytes(), project.settings.serve.max_pixels)
    return served.segmenter.predict_masks([upload])[0]


def _port_free(port: int) -> bool:
    """Nothing listens on the port (connections it closed may linger in TIME_WAIT; they hold nothing)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextmanager
def mlflow_models_serve(model_uri: str, tracking_uri: str, workdir: Path) -> Iterator[str]:
    """`mlflow models serve` on a free loopback port until the block ends; always stopped.

    It runs where torch cannot be imported, as in a serving image, and without this checkout
    on PYTHONPATH: MLflow puts the model's own code/ first.
    """
    no_torch = workdir / "no-torch" / "torch"
    no_torch.mkdir(parents=True)
    (no_torch / "__init__.py").write_text("raise ImportError('torch is kept from the MLflow model')\n")
    log = workdir / "serve.log"
    port = _free_port()
    venv_bin = Path(sys.executable).parent
    env = os.environ | {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(no_torch.parent),
    }
    command = [str(venv_bin / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("w") as out:
        # A process group of its own: the CLI runs uvicorn as its child; one signal stops both.
        server = subprocess.Popen(command, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{url}/ping", server, log, "mlflow models serve")
        yield url
    finally:
        with suppress(ProcessLookupError):  # a server that died early leaves no group to signal
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        deadline = time.monotonic() + 30
        while not (stopped := _port_free(port)) and time.monotonic() < deadline:
            time.sleep(0.1)  # uvicorn closes its socket as it shuts down
        if not stopped:
            with suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
    assert stopped, f"port {port} was still taken 30 s after mlflow models serve was stopped"


def test_mlflow_models_serve_answers_with_the_mask_of_wms(
    project_dir: Path,
    tracking: str,
    exported_model: Path,
    register_model: Callable[..., str],
    cli: Callable[..., Any],
    photo: Path,
    tmp_path: Path,
) -> None:
    register_model(project_dir, exported_model)
    project = load_settings(start=project_dir)
    uri = f"models:/{project.settings.tracking.model_name}@production"
    body = base64.b64encode(photo.read_bytes()).decode("ascii")
    with mlflow_models_serve(uri, project.tracking_uri, tmp_path) as url:
        split = {"dataframe_split": {"columns": ["image"], "data": [[body]]}}
        answer = httpx.post(f"{url}/invocations", json=split, timeout=60)
        records = {"dataframe_records": [{"image": body}]}
        by_records = httpx.post(f"{url}/invocations", json=records, timeout=60)
        garbage = {"dataframe_split": {"columns": ["image"], "data": [["bm90IGFuIGltYWdl"]]}}
        refused = httpx.post(f"{url}/invocations", json=garbage, timeout=60)
    assert answer.status_code == 200, answer.text
    (row,) = answer.json()["predictions"]
    assert by_records.json()["predictions"] == [row]
    assert refused.status_code == 400 and "not an image this service reads" in refused.text

    mask = _png_mask(base64.b64decode(row["mask_png"]))
    with Image.open(photo) as stored:  # on its side: the photo a viewer shows is stored.height wide
        assert mask.shape == (row["height"], row["width"]) == (stored.width, stored.height)
    assert row["foreground_fraction"] == pytest.approx(mask.mean())
    served = _served_mask(project_dir, photo)
    assert 0.001 < served.mean() < 0.999, "the test model should draw edges, not a constant mask"
    assert np.array_equal(mask, served)  # bit for bit what `wms serve` answers

    assert cli("predict", photo, "--out", tmp_path / "masks").exit_code == 0
    predicted = _png_mask((tmp_path / "masks" / f"{photo.stem}.png").read_bytes())
    # `wms predict` runs the same ONNX export on ONNX Runtime: the same mask, bit for bit.
    assert np.array_equal(predicted, mask)


def test_load_model_in_process_gives_the_served_mask_and_refuses_a_changed_export(
    project_dir: Path,
    tracking: str,
    exported_model: Path,
    register_model: Callable[..., str],
    photo: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import mlflow.artifacts
    import mlflow.pyfunc

    register_model(project_dir, exported_model)
    project = load_settings(start=project_dir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project.tracking_uri)
    uri = f"models:/{project.settings.tracking.model_name}@production"
    model = mlflow.pyfunc.load_model(uri)
    inputs = model.metadata.get_input_schema().to_dict()
    assert inputs == [{"type": "binary", "name": "image", "required": True}]
    answer = model.predict(pd.DataFrame({"image": [photo.read_bytes()] * 2}))
    assert list(answer.columns) == ["mask_png", "width", "height", "foreground_fraction"]
    served = _served_mask(project_dir, photo)
    for png in answer["mask_png"]:
        assert np.array_equal(_png_mask(png), served)

    folder = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "copy")))
    onnx = folder / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(RegistryError, match=r"sha256 .* but the registry recorded"):
        mlflow.pyfunc.load_model(str(folder))


def test_a_version_registered_as_bare_files_still_works_and_is_migrated(
    project_dir: Path,
    exported_model: Path,
    register_model: Callable[..., str],
    cli: Callable[..., Any],
    photo: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    old = register_model(project_dir, exported_model, mlmodel=False)
    no_export = tmp_path / "no-export"
    no_export.mkdir()
    for name in ("model.pt", "model.json"):
        (no_export / name).write_bytes((exported_model / name).read_bytes())
    unexported = register_model(project_dir, no_export, promote=False, mlmodel=False)
    project = load_settings(start=project_dir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project.tracking_uri)
    uri = f"models:/{project.settings.tracking.model_name}@production"
    with pytest.raises(MlflowException, match="MLmodel"):
        mlflow.pyfunc.load_model(uri)
    served = _served_mask(project_dir, photo)  # wms reads it as it is

    dry = cli("model", "migrate", "--dry-run")
    assert f"version {old} " in dry.output and "would get an MLmodel" in dry.output
    assert "would change 1 of 2 version(s): 1" in dry.output
    with pytest.raises(MlflowException, match="MLmodel"):
        mlflow.pyfunc.load_model(uri)

    done = cli("model", "migrate")
    assert done.exit_code == 0, done.output
    assert f"version {old} " in done.output and "MLmodel added" in done.output
    assert f"version {unexported} " in done.output and "left as is: no model.onnx" in done.output
    assert "changed 1 of 2 version(s): 1" in done.output
    answer = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"image": [photo.read_bytes()]}))
    assert np.array_equal(_png_mask(answer["mask_png"][0]), served)
    assert np.array_equal(_served_mask(project_dir, photo), served)

    downloaded = cli("model", "download", "production", tmp_path / "v1")
    assert downloaded.exit_code == 0, downloaded.output
    assert "sha256 checked: model.onnx" in downloaded.output
    assert (tmp_path / "v1" / "MLmodel").is_file() and (tmp_path / "v1" / "code" / "wms").is_dir()
    assert "changed 0 of 2 version(s)" in cli("model", "migrate").output
