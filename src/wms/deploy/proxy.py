"""The local deploy's stable port: a small reverse proxy whose upstream is a file, switched atomically.

    python -m wms.deploy.proxy --port 8000 --upstream-file .wms/deploy/upstream.json

Every request reads the upstream file (a `stat` while it is unchanged), so a deploy switches
versions by replacing the file (`os.replace`) and waits until `GET /_proxy` names the new
upstream before stopping the old server. Requests already forwarded finish on the old server
(uvicorn drains them on SIGTERM); a connection refused before anything was sent is retried
against the current upstream, so clients never see the switch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from wms.files import write_text_atomic

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
}  # fmt: skip
CONNECT_TRIES = 20  # with 50 ms between them: a second for an upstream to come back


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


def create_proxy(upstream_file: Path, max_body: int = 64 * 1024 * 1024) -> Starlette:
    upstream = Upstream(upstream_file)
    # No keep-alive: a pooled connection to a server that is shutting down could be closed
    # under a request; a fresh loopback connection per request costs a fraction of a millisecond.
    client = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0), timeout=120)

    async def whoami(_: Request) -> Response:
        # Its pid and file let a deploy find it when no deployment recorded it (one stopped half-way).
        me = {"proxy": True, "pid": os.getpid(), "upstream_file": str(upstream_file.resolve())}
        return JSONResponse(me | upstream.current())

    async def forward(request: Request) -> Response:
        body = await request.body()
        if len(body) > max_body:
            return JSONResponse({"error": "request body too large"}, status_code=413)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        for _ in range(CONNECT_TRIES):
            target = upstream.current().get("url")
            if not target:
                return JSONResponse({"error": "no model deployed yet; run `wms deploy`"}, status_code=503)
            url = target + request.url.path + (f"?{request.url.query}" if request.url.query else "")
            try:
                answer = await client.request(request.method, url, content=body, headers=headers)
            except httpx.ConnectError:
                await asyncio.sleep(0.05)  # nothing reached the server: safe to try again
                continue
            except httpx.HTTPError as exc:
                return JSONResponse({"error": f"upstream failed: {exc}"}, status_code=502)
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            out.pop("content-encoding", None)  # httpx has decoded the body already
            return Response(answer.content, status_code=answer.status_code, headers=out)
        return JSONResponse({"error": f"upstream {target} refuses connections"}, status_code=502)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return Starlette(
        routes=[Route("/_proxy", whoami), Route("/{path:path}", forward, methods=methods)],
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="WMS local deploy: reverse proxy on the stable port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-file", type=Path, required=True)
    args = parser.parse_args()
    uvicorn.run(create_proxy(args.upstream_file), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
