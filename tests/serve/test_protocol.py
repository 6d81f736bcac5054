"""Clients that send their request headers a byte at a time (slowloris), on real uvicorn with the
protocol `wms serve` runs on: closed with 408 at serve.header_timeout_seconds, while others are served."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from wms.config import ServeSettings
from wms.data.synth import synth_pair
from wms.serve.app import create_app
from wms.serve.model import load_folder
from wms.serve.protocol import header_deadline_protocol

DEADLINE = 1.0


@pytest.fixture
def live(exported_model: Path, live_server: Callable[..., Any]) -> Iterator[Any]:
    settings = ServeSettings(header_timeout_seconds=DEADLINE, upload_timeout_seconds=10, intra_op_threads=1)
    app = create_app(load_folder(exported_model), settings)
    http = header_deadline_protocol(settings.header_timeout_seconds, app.state.metrics.header_timeouts)
    with live_server(app, http=http) as server:
        yield server


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


@contextmanager
def _dripping(socks: list[socket.socket], every: float = 0.2) -> Iterator[None]:
    """Each socket sends one more header byte every `every` seconds, until the server closes it."""
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(every):
            for sock in socks:
                with suppress(OSError):  # closed by the server
                    sock.send(b"X")

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _heard_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, float | None]:
    """All the server said on `sock`, and when (time.monotonic) it closed it; None: still open."""
    heard, deadline = b"", time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        except ConnectionResetError:
            return heard, time.monotonic()
        if not data:
            return heard, time.monotonic()
        heard += data
    return heard, None


def test_connections_that_never_finish_their_headers_get_408_and_are_closed_while_others_are_served(
    live: Any,
) -> None:
    opened = time.monotonic()
    slow = [_connect(live.url) for _ in range(5)]
    try:
        for sock in slow:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        with _dripping(slow):
            meanwhile = httpx.get(f"{live.url}/health", timeout=5)
            heard = [_heard_until_closed(sock, 3 * DEADLINE) for sock in slow]
    finally:
        for sock in slow:
            sock.close()
    assert meanwhile.status_code == 200
    still_open = sum(closed is None for _, closed in heard)
    assert not still_open, f"{still_open} of 5 clients sending a header byte every 0.2 s were never closed"
    assert all(DEADLINE * 0.9 <= closed - opened < DEADLINE + 1.5 for _, closed in heard if closed)
    for answer, _ in heard:
        assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer.lower(), answer
        assert b"serve.header_timeout_seconds" in answer


def _header_timeouts(url: str) -> float:
    scrape = httpx.get(f"{url}/metrics", timeout=5).text
    samples = [s for family in text_string_to_metric_families(scrape) for s in family.samples]
    return next(s.value for s in samples if s.name == "wms_request_header_timeouts_total")


def test_metrics_count_the_connections_cut_for_headers_that_never_ended(live: Any) -> None:
    assert _header_timeouts(live.url) == 0
    slow = [_connect(live.url) for _ in range(2)]
    try:
        for sock in slow:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        with _dripping(slow):
            heard = [_heard_until_closed(sock, 3 * DEADLINE) for sock in slow]
    finally:
        for sock in slow:
            sock.close()
    assert all(answer.startswith(b"HTTP/1.1 408") for answer, _ in heard), heard
    assert _header_timeouts(live.url) == 2


def test_a_kept_alive_connection_has_the_same_deadline_for_its_next_request(live: Any) -> None:
    with _connect(live.url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):  # the whole first answer
            first += sock.recv(4096)
        answered = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\n")  # the next request, then a byte every 0.2 s
        with _dripping([sock]):
            heard, closed = _heard_until_closed(sock, 3 * DEADLINE)
    assert first.startswith(b"HTTP/1.1 200")
    assert closed is not None, "a kept-alive connection trickling its next request's headers stayed open"
    assert closed - answered < DEADLINE + 1.5 and heard.startswith(b"HTTP/1.1 408"), heard


def test_an_upload_slower_than_the_header_deadline_is_still_answered(live: Any) -> None:
    buffer = io.BytesIO()
    synth_pair(seed=3, index=0, size=64)[0].save(buffer, "JPEG")
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + buffer.getvalue() + b"\r\n--b--\r\n"
    )
    with _connect(live.url) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        for start in range(0, len(body), len(body) // 4 + 1):  # over 1.6 s: past the header deadline
            time.sleep(DEADLINE * 0.4)
            sock.sendall(body[start : start + len(body) // 4 + 1])
        sock.settimeout(10)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


def test_a_client_refused_before_its_upload_cannot_hold_the_connection_by_trickling_it(live: Any) -> None:
    with _connect(live.url) as sock:
        sock.sendall(  # over serve.max_upload_mb: 413 at once, before the body is read
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 900000000\r\n\r\n--b\r\n"
        )
        with _dripping([sock]):
            heard, closed = _heard_until_closed(sock, 3 * DEADLINE)
    assert heard.startswith(b"HTTP/1.1 413"), heard
    assert closed is not None, "a refused client trickling the upload it was refused kept its connection"
