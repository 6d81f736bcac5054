"""A crowd of uploads on real uvicorn: the ones past serve.max_concurrency + serve.max_queue get 503
at once, so the pod's memory and its /tmp spool stay bounded however many clients send at once."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from wms.config import ServeSettings
from wms.data.synth import synth_pair
from wms.serve.app import create_app
from wms.serve.model import ServedModel, load_folder


class _HeldSegmenter:
    """Stands in for the model: every inference waits until the test lets it go."""

    def __init__(self, spec: Any) -> None:
        self.spec, self.running = spec, 0
        self.go = threading.Event()
        self.lock = threading.Lock()

    def probability_maps(self, images: list[Image.Image]) -> list[np.ndarray]:
        with self.lock:
            self.running += 1
        self.go.wait(timeout=60)
        return [np.zeros((img.height, img.width), np.float32) for img in images]


def _large_photo() -> bytes:
    """A small JPEG padded to 2 MB: decoders ignore trailing bytes, the parser spools them to /tmp."""
    buffer = io.BytesIO()
    synth_pair(seed=2, index=0, size=64)[0].save(buffer, "JPEG")
    return buffer.getvalue() + b"\0" * (2 * 2**20)


def _in_flight(client: httpx.Client, url: str) -> float:
    """Predictions received whole and running or waiting for a turn, as /metrics counts them."""
    families = text_string_to_metric_families(client.get(f"{url}/metrics").text)
    return next(f.samples[0].value for f in families if f.name == "wms_inferences_in_flight")


def test_uploads_past_the_queue_get_503_at_once_and_the_rest_are_answered(
    exported_model: Path, live_server: Callable[[object], Any]
) -> None:
    real = load_folder(exported_model)
    held = _HeldSegmenter(real.segmenter.spec)
    settings = ServeSettings(max_concurrency=1, max_queue=2, max_upload_mb=3, intra_op_threads=1)
    app = create_app(ServedModel(held, real.card, real.verified), settings)  # type: ignore[arg-type]
    photo = _large_photo()
    with live_server(app) as live, ThreadPoolExecutor(8) as pool, httpx.Client(timeout=60) as client:

        def post(_: int) -> httpx.Response | str:
            try:
                return client.post(f"{live.url}/predict", files={"file": ("p.jpg", photo)}, timeout=10)
            except httpx.TimeoutException:
                return "no answer within 10 s"

        try:
            first = [pool.submit(post, i) for i in range(3)]  # one running, two waiting
            deadline = time.monotonic() + 20
            while (held.running < 1 or _in_flight(client, live.url) < 3) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert held.running == 1 and _in_flight(client, live.url) == 3, "three uploads never got in"
            refused = list(pool.map(post, range(5)))  # sent while the model is still held
        finally:
            held.go.set()
        answered = [f.result() for f in first]
        metrics = client.get(f"{live.url}/metrics").text
    assert [getattr(r, "status_code", r) for r in refused] == [503] * 5
    assert all(r.headers["retry-after"] == "2" and "busy" in r.json()["error"] for r in refused)  # type: ignore[union-attr]
    assert [getattr(r, "status_code", r) for r in answered] == [200] * 3
    assert 'wms_http_errors_total{route="/predict",status="503"} 5.0' in metrics


def _trickle(url: str, stop: threading.Event) -> socket.socket:
    """A client that declares a 2 MB photo and sends its body a byte every 50 ms, until `stop`."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 2000000\r\n\r\n"
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n\r\n'
    )

    def drip() -> None:
        while not stop.wait(0.05):
            try:
                sock.sendall(b"x")
            except OSError:  # the server closed the connection
                return

    threading.Thread(target=drip, daemon=True).start()
    return sock


def test_clients_trickling_their_uploads_keep_others_out_only_until_the_upload_deadline(
    exported_model: Path, live_server: Callable[[object], Any]
) -> None:
    settings = ServeSettings(max_concurrency=1, max_queue=1, upload_timeout_seconds=1, intra_op_threads=1)
    app = create_app(load_folder(exported_model), settings)
    buffer = io.BytesIO()
    synth_pair(seed=2, index=0, size=64)[0].save(buffer, "JPEG")
    stop = threading.Event()
    with live_server(app) as live, httpx.Client(timeout=10) as client:
        slow = [_trickle(live.url, stop) for _ in range(2)]  # as many as there are places
        try:
            started = time.monotonic()
            answers: list[tuple[float, int]] = []
            while time.monotonic() < started + 4 and 200 not in (status for _, status in answers):
                answer = client.post(f"{live.url}/predict", files={"file": ("p.jpg", buffer.getvalue())})
                answers.append((time.monotonic() - started, answer.status_code))
                time.sleep(0.1)
            heard = [_answer(sock) for sock in slow]  # while they still trickle
        finally:
            stop.set()
            for sock in slow:
                sock.close()
    statuses = [status for _, status in answers]
    assert statuses[0] == 503, f"the trickling clients never held the places: {answers}"
    assert statuses[-1] == 200, f"2 slow uploads kept a normal client out for 4 s: {answers}"
    assert answers[-1][0] < 3, f"kept out {answers[-1][0]:.1f} s with a 1 s upload deadline"
    assert all(h.startswith(b"HTTP/1.1 408") and b"serve.upload_timeout_seconds" in h for h in heard), heard


def _answer(sock: socket.socket) -> bytes:
    """What the server has said on a connection, waiting a second at most."""
    sock.settimeout(1)
    try:
        return sock.recv(4096)
    except TimeoutError:
        return b""
