"""`wms serve`: the segmentation API and its web page, on ONNX Runtime (torch is never imported)."""

from __future__ import annotations

import errno
import socket

import typer

from wms.cli._common import console, state
from wms.errors import UsageError


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="Address to listen on (default: serve.host)."),
    port: int | None = typer.Option(None, "--port", "-p", help="Port (default: serve.port)."),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Registry alias or version, or a model folder holding model.onnx (default: serve.model).",
    ),
) -> None:
    """Serve the model over HTTP: POST /predict (photo in, mask PNG out), a web page at /, /metrics.

    The model file's sha256 is checked against the registry's record before the first request;
    a mismatch refuses to start. Limits and threads come from the [serve] settings; with
    serve.capture on, some photos are kept in serve.capture_dir for labelling (see docs/serving.md).
    """
    import uvicorn

    from wms.serve.app import create_app
    from wms.serve.fetch import load_model
    from wms.serve.protocol import header_deadline_protocol

    project = state(ctx).project({"serve.host": host, "serve.port": port, "serve.model": model})
    cfg = project.settings.serve
    if "://" not in cfg.capture_dir:  # a folder, relative to the project like every configured path
        cfg = cfg.model_copy(update={"capture_dir": str(project.path(cfg.capture_dir))})
    console.print(f"loading model {cfg.model} …", highlight=False)
    served = load_model(project, cfg.model, threads=cfg.intra_op_threads)
    check = "sha256 verified" if served.verified else "no registry record: sha256 not checked"
    sock = _bound(cfg.host, cfg.port)
    url = cfg.url
    console.print(
        f"serving model {served.version} ({check}) at {url}  ·  web page {url}/  ·  API docs {url}/docs",
        highlight=False,
        soft_wrap=True,
    )
    if cfg.capture != "off":
        console.print(
            f"capture {cfg.capture}: keeping photos in {cfg.capture_dir} (at most {cfg.capture_per_minute:g} "
            f"a minute, {cfg.capture_max_files} photos, {cfg.capture_max_mb:g} MB)",
            highlight=False,
            soft_wrap=True,
        )
    app = create_app(served, cfg)
    http = header_deadline_protocol(cfg.header_timeout_seconds, app.state.metrics.header_timeouts)
    server = uvicorn.Server(uvicorn.Config(app, http=http, log_level="warning", timeout_graceful_shutdown=30))
    server.run(sockets=[sock])
    if not server.started:  # the app failed to start; uvicorn has said why
        raise typer.Exit(3)


def _bound(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, as uvicorn binds one, or one clear line saying why it cannot be."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = (
            "another server listens there: pass --port, or stop it (`wms deploy stop` stops a local deploy)"
            if exc.errno == errno.EADDRINUSE
            else "check serve.host (--host) and serve.port (--port)"
        )
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; {hint}") from None
    sock.set_inheritable(True)
    return sock
