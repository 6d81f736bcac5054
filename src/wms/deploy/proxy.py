"""A small reverse proxy whose upstream is a file, switched atomically: the local deploy's stable
port, and in the cluster the production address (devops/helm/wms-entry, wms.deploy.k8s_entry).

    python -m wms.deploy.proxy --port 8000 --upstream-file .wms/deploy/upstream.json

Every request reads the upstream file (a `stat` while it is unchanged), so a deploy switches
versions by replacing the file (`os.replace`) and waits until `GET /_proxy` names the new
upstream before stopping the old server. Requests already forwarded finish on the old server
(uvicorn drains them on SIGTERM); a connection refused before anything was sent is retried
against the current upstream, so clients never see the switch.

A request's body is passed on as it arrives, never held whole, so the server's own limits apply
to it; a body over the proxy's `max_body` is refused as soon as it gets there, and one still
arriving `--upload-timeout` seconds after its headers gets 408. A client that has not sent its
request headers within `--header-timeout` seconds gets 408 and is closed (wms.serve.protocol).
`wms deploy` passes serve.upload_timeout_seconds and serve.header_timeout_seconds.

`GET /_proxy/metrics` is the proxy's own Prometheus scrape (`ProxyMetrics`): what became of each
request (passed on, or answered by the proxy itself because no upstream could answer it), the
connections cut for headers that never ended, and the version it forwards to. The server's
`/metrics` counts only what reached it; these are the failures a client met before that. In the
cluster, where this proxy is the production address, the wms-entry chart's alerts read them.
Each 502 and 503 of its own is also a line in its log, with the reason (at most one a
`LOG_EVERY` seconds per kind, saying how many more there were), so an outage does not flood it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from wms.files import write_text_atomic
from wms.serve.protocol import header_deadline_protocol, upload_too_slow

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
}  # fmt: skip
CONNECT_TRIES = 20  # with 50 ms between them: a second for an upstream to come back
MAX_BODY_MB = 64  # the least the proxy lets through; more where the server takes larger uploads


def body_limit_mb(max_upload_mb: float) -> float:
    """The proxy's body limit in MiB for a server that takes uploads of `max_upload_mb`
    (serve.max_upload_mb): never below the server's own, so the server is the one that says no."""
    return max(float(MAX_BODY_MB), 2 * max_upload_mb)


# What became of a request: `forwarded` (the upstream answered it, whatever it said), or the
# proxy's own answer: 503 no_upstream (nothing deployed yet), 502 unreachable (the upstream
# refused connections for CONNECT_TRIES), 502 upstream_failed (it broke off mid-request),
# 413 too_large, 408 too_slow. The first three are the address failing its clients.
OUTCOMES = ("forwarded", "no_upstream", "unreachable", "upstream_failed", "too_large", "too_slow")


LOG_EVERY = 10.0  # seconds between two log lines of one kind of failure
log = logging.getLogger(__name__)


class FailureLog:
    """Logs the proxy's own failures, one line per kind at most every `every` seconds; the next
    line of a kind says how many of it went unlogged in between."""

    def __init__(self, every: float = LOG_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.clock = every, clock
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def __call__(self, outcome: str, reason: str) -> None:
        now = self.clock()
        if now - self._last.get(outcome, -self.every) < self.every:
            self._unlogged[outcome] = self._unlogged.get(outcome, 0) + 1
            return
        self._last[outcome] = now
        more = self._unlogged.pop(outcome, 0)
        log.warning("%s: %s%s", outcome, reason, f" ({more} more since the last such line)" if more else "")


class ProxyMetrics:
    """The proxy's counters, in a registry of its own (several proxies may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "wms_proxy_requests",
            "Requests to the proxy, by what became of them (forwarded, or answered by the proxy)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:  # every series from the start: rate() needs the zero
            self.requests.labels(outcome=outcome)
        self.header_timeouts = Counter(
            "wms_proxy_request_header_timeouts",
            "Connections answered 408 and closed because their request headers were not all in "
            "within --header-timeout seconds",
            registry=self.registry,
        )
        self.upstream = Gauge(
            "wms_proxy_upstream_info",
            "1 for the model version the proxy forwards to (none before the first deploy)",
            ["version"],
            registry=self.registry,
        )

    def count(self, outcome: str) -> None:
        self.requests.labels(outcome=outcome).inc()

    def scrape(self, upstream: dict[str, Any]) -> bytes:
        self.upstream.clear()
        if upstream.get("url"):
            self.upstream.labels(version=str(upstream.get("version", ""))).set(1)
        return generate_latest(self.registry)


def outcome_counts(scrape: str) -> dict[str, int]:
    """The requests a proxy counted, by outcome, from its /_proxy/metrics text; {} where the text
    holds no such counts (not this proxy's scrape)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        samples = [s for family in text_string_to_metric_families(scrape) for s in family.samples]
    except ValueError:
        return {}
    return {
        s.labels["outcome"]: int(s.value)
        for s in samples
        if s.name == "wms_proxy_requests_total" and s.labels.get("outcome") in OUTCOMES
    }


def traffic(scrape: str) -> str:
    """`outcome_counts` in words: how many requests the proxy passed on, and how many it answered
    itself, by kind; "" where the text holds no counts."""
    counts = outcome_counts(scrape)
    if not counts:
        return ""
    passed, failed = counts.get("forwarded", 0), {k: v for k, v in counts.items() if k != "forwarded" and v}
    line = f"{passed:,} request(s) passed on"
    if not failed:
        return f"{line}, none answered by the proxy itself"
    kinds = ", ".join(f"{v:,} {k}" for k, v in failed.items())
    return f"{line}, {sum(failed.values()):,} answered by the proxy itself ({kinds})"


class _TooLarge(Exception):
    """The request's body went over the proxy's limit while it arrived."""


class _TooSlow(Exception):
    """The request's body was not whole by the upload deadline."""


class Upstream:
    """The current upstream, re-read whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._value: dict[str, Any] = {}

    def current(self) -> dict[str, Any]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (stat.st_mtime_ns, stat.st_ino)
        if stamp != self._stamp:
            try:
                self._value = json.loads(self.path.read_text())
                self._stamp = stamp
            except (OSError, ValueError):
                pass  # keep the last good value; os.replace makes a half-written file impossible anyway
        return self._value


def write_upstream(path: Path, url: str, version: str) -> None:
    """Point the proxy at `url` in one atomic step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"url": url, "version": version}))


def create_proxy(
    upstream_file: Path,
    max_body: int = 64 * 1024 * 1024,
    body_seconds: float = 180,
    metrics: ProxyMetrics | None = None,
) -> Starlette:
    """The proxy app: bodies over `max_body` get 413, and bodies not whole `body_seconds` after the
    headers get 408 (serve.upload_timeout_seconds: the proxy's deadline starts just before the
    server's, so the client hears the reason rather than a server that hung up on the proxy).
    What becomes of each request counts on `metrics` (a new ProxyMetrics where none is given),
    scraped at /_proxy/metrics."""
    upstream = Upstream(upstream_file)
    metrics = metrics or ProxyMetrics()
    failed = FailureLog()
    # No keep-alive: a pooled connection to a server that is shutting down could be closed
    # under a request; a fresh loopback connection per request costs a fraction of a millisecond.
    client = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0), timeout=120)

    async def whoami(_: Request) -> Response:
        # Its pid and file let a deploy find it when no deployment recorded it (one stopped half-way).
        me = {"proxy": True, "pid": os.getpid(), "upstream_file": str(upstream_file.resolve())}
        return JSONResponse(me | upstream.current())

    async def scrape(_: Request) -> Response:
        return Response(metrics.scrape(upstream.current()), media_type=CONTENT_TYPE_LATEST)

    def failure(outcome: str, status: int, error: str, reason: str) -> Response:
        """The proxy's own 502 or 503, where no upstream could answer: counted, logged, answered."""
        metrics.count(outcome)
        failed(outcome, f"answered {status}: {reason}")
        return JSONResponse({"error": error}, status_code=status)

    def too_large() -> Response:
        metrics.count("too_large")
        refusal = {"error": f"request body over {max_body // 2**20} MiB"}
        return JSONResponse(refusal, status_code=413, headers={"connection": "close"})

    async def capped(request: Request, deadline: float) -> AsyncIterator[bytes]:
        received, chunks = 0, request.stream()
        while True:
            with anyio.move_on_after(deadline - anyio.current_time()) as timer:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
            if timer.cancelled_caught:
                raise _TooSlow
            received += len(chunk)
            if received > max_body:
                raise _TooLarge
            yield chunk

    async def forward(request: Request) -> Response:
        deadline = anyio.current_time() + body_seconds
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body:
            return too_large()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        if length.isdigit():  # the server can refuse an upload over its limit before it arrives
            headers["content-length"] = length
        body: AsyncIterator[bytes] | None = None
        if length.isdigit() or "transfer-encoding" in request.headers:
            body = capped(request, deadline)  # untouched by a try that could not connect: safe to pass again
        why = ""  # the last refused connection's reason
        for _ in range(CONNECT_TRIES):
            target = upstream.current().get("url")
            if not target:
                no_model = "no model deployed yet; run `wms deploy`"
                return failure("no_upstream", 503, no_model, f"{upstream_file} names no upstream")
            url = target + request.url.path + (f"?{request.url.query}" if request.url.query else "")
            try:
                answer = await client.request(request.method, url, content=body, headers=headers)
            except httpx.ConnectError as exc:
                why = str(exc) or type(exc).__name__
                await asyncio.sleep(0.05)  # nothing reached the server: safe to try again
                continue
            except _TooLarge:
                return too_large()
            except _TooSlow:
                metrics.count("too_slow")
                slow = upload_too_slow(body_seconds)
                return JSONResponse({"error": slow}, status_code=408, headers={"connection": "close"})
            except httpx.HTTPError as exc:
                broke = str(exc) or type(exc).__name__
                reason = f"{request.method} {url} failed: {broke}"
                return failure("upstream_failed", 502, f"upstream failed: {broke}", reason)
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            out.pop("content-encoding", None)  # httpx has decoded the body already
            metrics.count("forwarded")
            return Response(answer.content, status_code=answer.status_code, headers=out)
        reason = f"{target} refused connections for a second: {why}"
        return failure("unreachable", 502, f"upstream {target} refuses connections", reason)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return Starlette(
        routes=[
            Route("/_proxy", whoami),
            Route("/_proxy/metrics", scrape),
            Route("/{path:path}", forward, methods=methods),
        ],
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(
        description="WMS deploy proxy: the local deploy's stable port, and the cluster's production "
        "address; GET /_proxy says where it forwards, GET /_proxy/metrics is its Prometheus scrape"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-file", type=Path, required=True)
    parser.add_argument("--header-timeout", type=float, default=10, help="serve.header_timeout_seconds")
    parser.add_argument("--upload-timeout", type=float, default=180, help="serve.upload_timeout_seconds")
    parser.add_argument(
        "--max-body-mb", type=float, default=MAX_BODY_MB, help="refuse a larger body (body_limit_mb)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s:  %(message)s")  # as uvicorn's lines
    metrics = ProxyMetrics()
    http = header_deadline_protocol(args.header_timeout, metrics.header_timeouts)
    app = create_proxy(
        args.upstream_file,
        max_body=int(args.max_body_mb * 2**20),
        body_seconds=args.upload_timeout,
        metrics=metrics,
    )
    uvicorn.run(app, host=args.host, port=args.port, http=http, log_level="warning")


if __name__ == "__main__":
    main()
