"""The deploy proxy (the local deploy's stable port, the cluster's production address) under hostile
clients: it holds no request body whole, refuses one over its limit as soon as it gets there, and
closes connections whose headers never end; and its own metrics count what clients met there."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from wms.config import ServeSettings
from wms.deploy.local import free_port
from wms.deploy.proxy import OUTCOMES, create_proxy, write_upstream
from wms.serve.app import create_app
from wms.serve.model import load_folder

SRC = Path(__file__).resolve().parents[2] / "src"


class Upstream:
    """A server that answers with the size of the body it read, and says when its first bytes came."""

    def __init__(self) -> None:
        self.first_bytes = threading.Event()

        async def echo(request: Request) -> JSONResponse:
            size = 0
            try:
                async for chunk in request.stream():
                    if chunk:
                        self.first_bytes.set()
                    size += len(chunk)
            except ClientDisconnect:  # the proxy gave up on the upload
                return JSONResponse({"size": None})
            return JSONResponse({"size": size})

        self.app = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])


@pytest.fixture
def proxied(tmp_path: Path, live_server: Callable[..., Any]) -> Iterator[tuple[str, Upstream]]:
    upstream = Upstream()
    with live_server(upstream.app) as server:
        write_upstream(tmp_path / "upstream.json", server.url, "1")
        with live_server(create_proxy(tmp_path / "upstream.json", max_body=2**20)) as proxy:
            yield proxy.url, upstream


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def _until_closed(sock: socket.socket, seconds: float = 5) -> bytes:
    """What the server said on `sock` until it closed it, or `seconds` passed."""
    heard, deadline = b"", time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        heard += data
    return heard


def test_an_upload_reaches_the_server_while_it_arrives_and_is_answered_whole(
    proxied: tuple[str, Upstream],
) -> None:
    url, upstream = proxied
    with _connect(url) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"x" * 100_000)
        passed_on = upstream.first_bytes.wait(5)  # before the rest is sent
        sock.sendall(b"x" * 100_000)
        answer = b""
        while not answer.endswith(b"}"):  # the whole answer
            answer += sock.recv(4096)
    assert passed_on, "the proxy held the upload until it was whole before passing any of it on"
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"size":200000}'), answer
    assert httpx.get(f"{url}/health").json() == {"size": 0}


def test_an_upload_over_the_limit_is_refused_when_it_gets_there_not_after_it_all_arrived(
    proxied: tuple[str, Upstream],
) -> None:
    url, _ = proxied
    with _connect(url) as sock:  # chunked: no length to refuse it by in advance
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 2**16
        for _ in range(2**20 // len(chunk) + 2):  # just over the proxy's 1 MiB, then nothing more
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413") and b"over 1 MiB" in answer, answer
    too_long = httpx.post(f"{url}/predict", content=b"x" * (2**20 + 1))
    assert too_long.status_code == 413


def test_the_proxy_closes_a_connection_whose_headers_never_end(tmp_path: Path) -> None:
    """And, from its command line too, refuses a body over --max-body-mb."""
    port = free_port()
    args = ["--port", str(port), "--upstream-file", str(tmp_path / "upstream.json"), "--header-timeout", "1"]
    args += ["--max-body-mb", "1"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))  # this checkout
    proc = subprocess.Popen([sys.executable, "-m", "wms.deploy.proxy", *args], env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/_proxy", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, "the proxy did not start"
                time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"GET /_proxy HTTP/1.1\r\nHost: x\r\n")
            heard, closed, until = b"", False, time.monotonic() + 4
            while time.monotonic() < until and not closed:
                try:
                    data = sock.recv(4096)
                    heard, closed = heard + data, not data
                except TimeoutError:
                    sock.sendall(b"X")  # one more header byte every 0.2 s
                except ConnectionResetError:
                    closed = True
        refused = httpx.post(f"http://127.0.0.1:{port}/predict", content=b"x" * (2 * 2**20), timeout=10)
        assert refused.status_code == 413 and "over 1 MiB" in refused.text, refused.text
        scraped = _scrape(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert closed, "a client sending its headers a byte at a time was still connected after 4 s"
    assert heard.startswith(b"HTTP/1.1 408"), heard
    assert scraped["wms_proxy_request_header_timeouts_total"] == 1  # the cut is counted
    assert scraped['wms_proxy_requests_total{outcome="too_large"}'] == 1


def test_an_upload_too_slow_for_the_server_gets_408_with_the_reason_through_the_proxy(
    exported_model: Path, tmp_path: Path, live_server: Callable[..., Any]
) -> None:
    settings = ServeSettings(upload_timeout_seconds=1, intra_op_threads=1)
    with live_server(create_app(load_folder(exported_model), settings)) as server:
        write_upstream(tmp_path / "upstream.json", server.url, "1")
        proxy_app = create_proxy(tmp_path / "upstream.json", body_seconds=settings.upload_timeout_seconds)
        with live_server(proxy_app) as proxy, _connect(proxy.url) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 2000000\r\n\r\n--b\r\n"
            )
            started, heard = time.monotonic(), b""
            sock.settimeout(0.1)
            while time.monotonic() < started + 5 and b"}" not in heard:
                try:
                    heard += sock.recv(4096)
                except TimeoutError:
                    sock.sendall(b"x")  # a byte of the photo every 0.1 s
    assert heard.startswith(b"HTTP/1.1 408"), heard
    # what the server itself says, what is wrong and what to do
    message = b"the upload was not complete after 1 s (serve.upload_timeout_seconds); send it again"
    assert message in heard, heard


def test_the_proxy_starts_on_its_own_imports_and_warns_of_nothing() -> None:
    """`python -m wms.deploy.proxy` runs in every deploy (on a laptop and as the cluster's
    production address): it must not import the deploy targets first, which made Python warn that
    the module was imported twice, on every start, into the proxy's log."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    run = subprocess.run(
        [sys.executable, "-W", "error", "-m", "wms.deploy.proxy", "--help"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0 and "--upstream-file" in run.stdout, run.stderr
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, wms.deploy.proxy; print(sorted(sys.modules))"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    for heavy in ("wms.deploy.k8s", "wms.deploy.local", "lightkube", "wms.registry", "mlflow"):
        assert f"'{heavy}'" not in imported, heavy


def test_the_proxy_never_refuses_a_body_the_server_would_take() -> None:
    """Its limit (an early 413 for what no server behind it takes) follows serve.max_upload_mb up:
    the local deploy and the cluster's production address pass body_limit_mb of it
    (tests/deploy/test_k8s.py checks the address's)."""
    from wms.deploy.proxy import MAX_BODY_MB, body_limit_mb

    assert body_limit_mb(20) == MAX_BODY_MB == 64
    assert body_limit_mb(100) == 200


def _scrape(url: str) -> dict[str, float]:
    """The proxy's /_proxy/metrics as {'name{label="value"}': value}."""
    text = httpx.get(f"{url}/_proxy/metrics", timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def _hangs_up() -> tuple[str, Callable[[], None]]:
    """A server that takes each connection and closes it without a word: an upstream that fails
    mid-request. Its URL, and how to stop it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(5)
        server.close()

    return f"http://127.0.0.1:{server.getsockname()[1]}", close


def test_the_proxy_counts_what_its_clients_met_and_names_its_upstream(
    tmp_path: Path, live_server: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Each way a request can end is counted apart: the server behind it answering, or the proxy
    answering itself because nothing could (the production address's alerts read these); and each
    of its own 502s and 503s is a line in its log that says why."""
    caplog.set_level(logging.WARNING, logger="wms.deploy.proxy")
    upstream_file = tmp_path / "upstream.json"
    hang_up_url, stop_hanging_up = _hangs_up()
    with (
        live_server(Upstream().app) as server,
        live_server(create_proxy(upstream_file, max_body=2**20)) as proxy,
    ):
        try:
            before = _scrape(proxy.url)
            assert not any(name.startswith("wms_proxy_upstream_info") for name in before)  # none yet
            assert {before[f'wms_proxy_requests_total{{outcome="{o}"}}'] for o in OUTCOMES} == {0}
            assert httpx.get(f"{proxy.url}/ready").status_code == 503  # nothing deployed yet
            write_upstream(upstream_file, server.url, "7")
            for _ in range(3):
                assert httpx.get(f"{proxy.url}/ready").status_code == 200
            assert httpx.post(f"{proxy.url}/predict", content=b"x" * (2**20 + 1)).status_code == 413
            write_upstream(upstream_file, hang_up_url, "7")
            assert httpx.get(f"{proxy.url}/ready").status_code == 502  # broke off mid-request
            write_upstream(upstream_file, f"http://127.0.0.1:{free_port()}", "8")
            assert httpx.get(f"{proxy.url}/ready", timeout=10).status_code == 502  # refuses connections
            after = _scrape(proxy.url)
        finally:
            stop_hanging_up()
    counted = {o: after[f'wms_proxy_requests_total{{outcome="{o}"}}'] for o in OUTCOMES}
    assert counted == {
        "forwarded": 3, "no_upstream": 1, "unreachable": 1, "upstream_failed": 1,
        "too_large": 1, "too_slow": 0,
    }  # fmt: skip
    assert after['wms_proxy_upstream_info{version="8"}'] == 1
    assert not any(name.startswith('wms_proxy_upstream_info{version="7"') for name in after)
    said = [r.getMessage() for r in caplog.records if r.name == "wms.deploy.proxy"]
    assert len(said) == 3, said
    assert said[0].startswith("no_upstream: answered 503:") and "names no upstream" in said[0]
    assert said[1].startswith(f"upstream_failed: answered 502: GET {hang_up_url}/ready failed:")
    assert (
        said[2].startswith("unreachable: answered 502: http://127.0.0.1:")
        and "refused connections" in said[2]
    )


def test_an_outage_does_not_flood_the_proxys_log(caplog: pytest.LogCaptureFixture) -> None:
    """One line per kind of failure at most every LOG_EVERY seconds; the next says how many it left out."""
    from wms.deploy.proxy import FailureLog

    clock = [100.0]
    caplog.set_level(logging.WARNING, logger="wms.deploy.proxy")
    failed = FailureLog(every=10, clock=lambda: clock[0])
    for _ in range(50):  # a client storm against a model that is gone
        failed("unreachable", "answered 502: gone")
        clock[0] += 0.1
    failed("no_upstream", "answered 503: none")  # another kind has its own pace
    clock[0] += 10
    failed("unreachable", "answered 502: gone")
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "unreachable: answered 502: gone",  # the other 49 within 5 s are counted, not logged
        "no_upstream: answered 503: none",  # another kind keeps its own pace
        "unreachable: answered 502: gone (49 more since the last such line)",
    ]
