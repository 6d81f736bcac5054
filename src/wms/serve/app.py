"""The serving API: FastAPI on ONNX Runtime, with limits that keep hostile input at 4xx.

    wms serve                      # the production model on serve.host:serve.port
    curl -F file=@photo.jpg localhost:8000/predict > mask.png

Decoding and inference run in worker threads, at most `serve.max_concurrency` at once, so the
event loop keeps answering /health and /metrics while the CPU works. At most
`serve.max_queue` more predictions wait for a turn; the next gets 503 at once, before its body is
read, so a crowd of uploads can neither fill the pod's memory nor its /tmp (where uploads over
1 MB are spooled). A waiting upload stays in its spool: it is read only once its turn comes.
An upload still incomplete `serve.upload_timeout_seconds` after its headers gets 408 and gives
its place back, so clients that trickle their bodies cannot keep everyone else at 503 for long
(uvicorn has no timeout of its own for reading a request).
Every prediction carries its uncertainty (wms.uncertainty); with `serve.capture` on, some photos
are kept for labelling after the response is sent (wms.serve.capture). When the last prediction
under way ends, the memory it freed is given back to the system (wms.serve.heap).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Literal

import anyio
import anyio.to_thread
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from wms.config import ServeSettings
from wms.serve.capture import Capture, Captured, describe
from wms.serve.heap import release_freed_memory
from wms.serve.imaging import InputError, MaskSummary, decode_upload, summarize_mask
from wms.serve.metrics import Metrics
from wms.serve.model import ServedModel
from wms.serve.protocol import upload_too_slow
from wms.uncertainty import Assessment, assess

MB = 1024 * 1024
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file
# On a 408: uvicorn then closes the connection instead of keeping it open for as long as the
# slow client goes on sending.
CLOSE = ((b"connection", b"close"),)


class ErrorBody(BaseModel):
    error: str


class Uncertainty(BaseModel):
    score: float
    entropy: float
    uncertain_share: float
    regions: int
    verdict: Literal["sure", "check this one"]


class Prediction(BaseModel):
    mask_png_base64: str
    width: int
    height: int
    foreground_fraction: float
    bbox: dict[str, int] | None
    model_version: str
    latency_ms: float
    uncertainty: Uncertainty


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "empty, truncated or corrupt image",
        408: "the upload was not whole within serve.upload_timeout_seconds",
        413: "upload or pixel count over the limits",
        415: "not an image",
        422: "no form field 'file', or a bad query parameter",
    }.items()
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _describe_validation(exc: RequestValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
        if where == "file":
            problems.append(
                "send the photo as multipart/form-data in the form field 'file' "
                "(e.g. curl -F file=@photo.jpg .../predict)"
            )
        else:
            problems.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(dict.fromkeys(problems)) or "invalid request"


class _CutOff(Exception):
    """The request's body is refused while it arrives (state["cut"] says why)."""


class GuardMiddleware:
    """Counts every request for /metrics, cuts off request bodies over the upload limit or still
    arriving `body_seconds` after the headers, and answers 503 to a prediction when
    `max_predictions` are already under way (receiving, waiting or running).

    The upload limit is enforced on the bytes as they arrive, before the multipart parser spools
    them anywhere, whether or not the client sent a Content-Length. A request is counted, with
    its latency, when the last byte of its answer is handed to the server: background work
    after the answer (a capture being written) runs inside the app's call, and is not the
    client's wait.
    """

    def __init__(
        self, app: Any, metrics: Metrics, max_body: int, max_predictions: int, body_seconds: float
    ) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body
        self.max_predictions, self.predicting = max_predictions, 0  # one event loop: no lock
        self.body_seconds = body_seconds

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = self.metrics.route(scope.get("path", ""))
        state: dict[str, Any] = {
            "status": 500,
            "received": 0,  # body bytes so far
            "whole": False,  # the body has arrived whole
            "cut": None,  # (status, message) when the body was refused while it arrived
            "replied": False,
            "counted": False,
        }
        body_deadline = anyio.current_time() + self.body_seconds  # from the end of the headers

        def count(status: int) -> None:
            if not state["counted"]:
                state["counted"] = True
                self.metrics.observe(scope["method"], route, status, time.perf_counter() - started)

        refusal = f"the upload is over the limit of {self.max_body // MB} MB (serve.max_upload_mb)"

        length = dict(scope.get("headers", ())).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            await self._reply(send, 413, refusal, state)
            count(413)
            return

        predicting = route == "/predict" and scope["method"] == "POST"
        if predicting:
            if self.predicting >= self.max_predictions:
                busy = (
                    f"the service is busy: {self.predicting} photos are being segmented or waiting "
                    "(serve.max_concurrency + serve.max_queue); try again in a few seconds"
                )
                await self._reply(send, 503, busy, state, ((b"retry-after", b"2"),))
                count(503)
                return
            self.predicting += 1
        admitted = predicting

        def done(status: int) -> None:
            nonlocal predicting
            if predicting:  # the slot is free once the answer is out, before any capture is written
                predicting = False
                self.predicting -= 1
            count(status)

        async def limited_receive() -> Any:
            if state["cut"] or state["whole"]:  # after the body: a wait for the client to leave
                return await receive()
            with anyio.CancelScope(deadline=body_deadline) as timer:
                message = await receive()
            if timer.cancelled_caught:
                state["cut"] = (408, upload_too_slow(self.body_seconds))
                raise _CutOff
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body:
                    state["cut"] = (413, refusal)
                    raise _CutOff
                state["whole"] = not message.get("more_body", False)
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            if state["cut"]:
                return  # whatever the app makes of the cut-off body, the client hears why it was cut
            if message["type"] == "http.response.start":
                state["status"], state["replied"] = message["status"], True
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done(int(state["status"]))

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            if not state["cut"]:
                raise
        finally:
            if state["cut"] and not state["replied"]:
                status, message = state["cut"]
                await self._reply(send, status, message, state, CLOSE if status == 408 else ())
            done(int(state["status"]))  # an answer cut off, refused or never sent
            if admitted and self.predicting == 0:  # the last one out: its photo and maps are freed
                await anyio.to_thread.run_sync(release_freed_memory)

    @staticmethod
    async def _reply(
        send: Any,
        status: int,
        message: str,
        state: dict[str, Any],
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers.extend(extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        state["status"], state["replied"] = status, True


def create_app(model: ServedModel, settings: ServeSettings) -> FastAPI:
    """The service for one loaded model."""
    metrics = Metrics(model.card.version, model.card.metrics.get("test_dice"))
    max_upload = int(settings.max_upload_mb * MB)
    limiter: dict[str, anyio.CapacityLimiter] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        limiter["inference"] = anyio.CapacityLimiter(settings.max_concurrency)
        metrics.set_ready(True)
        try:
            yield
        finally:
            metrics.set_ready(False)

    app = FastAPI(
        title="WMS counter-window segmenter",
        version=model.card.version,
        description="Upload a water-meter photo, get the mask of its counter window.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics  # the server's HTTP protocol counts its 408s there (wms.serve.protocol)

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in message:
            message = "the request body is not valid multipart/form-data; send the photo in the field 'file'"
        return _error(exc.status_code, message)

    threshold = model.segmenter.spec.threshold
    capture = Capture(settings, model.card.version, threshold, metrics.captured)

    def infer(upload: UploadFile) -> tuple[bytes, MaskSummary, Assessment, Image.Image, float]:
        # Read here, with a slot held: a waiting upload stays in its spool (on disk past 1 MB).
        data = upload.file.read(max_upload + 1)
        if len(data) > max_upload:
            raise InputError(413, f"the upload is over the limit of {settings.max_upload_mb:g} MB")
        started = time.perf_counter()
        image = decode_upload(data, settings.max_pixels)
        (prob,) = model.segmenter.probability_maps([image])
        summary = summarize_mask(prob > threshold)  # exactly what predict_masks compares
        uncertainty = assess(prob, threshold)
        return data, summary, uncertainty, image, time.perf_counter() - started

    @app.get("/health", summary="The process is alive")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        summary="The model is loaded and the app serves",
        responses={503: {"description": "starting or shutting down"}},
    )
    async def ready() -> JSONResponse:
        body = {"ready": metrics.is_ready, "version": model.card.version, "verified": model.verified}
        return JSONResponse(body, status_code=200 if metrics.is_ready else 503)

    @app.get("/model", summary="Version, test metrics and dataset version of the served model")
    async def model_info() -> dict[str, Any]:
        return {
            **model.card.to_dict(),
            "image_size": model.segmenter.spec.image_size,
            "threshold": model.segmenter.spec.threshold,
            "verified": model.verified,
            "capture": describe(settings),
        }

    @app.post(
        "/predict",
        summary="Segment one photo",
        responses={200: {"content": {"image/png": {}}, "model": Prediction}, **ERRORS},
    )
    async def predict(
        file: UploadFile = File(..., description="A JPEG or PNG photo"),
        format: Literal["png", "json"] = Query(
            "png", description="png: the mask itself; json: mask as base64 plus box and fraction"
        ),
        keep: bool = Query(
            True,
            alias="capture",
            description="false: never keep this photo for labelling, whatever serve.capture says "
            "(the deploy's smoke check sends false)",
        ),
    ) -> Response:
        with metrics.inflight():
            data, summary, uncertainty, image, seconds = await anyio.to_thread.run_sync(
                infer, file, limiter=limiter["inference"]
            )
        metrics.inference.observe(seconds)
        metrics.foreground.observe(summary.foreground_fraction)
        metrics.uncertainty.observe(uncertainty.score)
        metrics.regions.observe(uncertainty.regions)
        latency_ms = round(1000 * seconds, 2)
        headers = {
            "X-Model-Version": model.card.version,
            "X-Latency-Ms": str(latency_ms),
            "X-Uncertainty": f"{uncertainty.score:.4f}",  # the PNG answer's only word on it
            "X-Verdict": uncertainty.verdict,
        }
        response: Response
        if format == "json":
            body = {
                **summary.to_json(),
                "model_version": model.card.version,
                "latency_ms": latency_ms,
                "uncertainty": uncertainty.to_dict(),
            }
            response = JSONResponse(body, headers=headers)
        else:
            response = Response(summary.png, media_type="image/png", headers=headers)
        reason = capture.wants(uncertainty) if keep else None
        if reason is not None:  # written after the response is sent, in a worker thread
            item = Captured(data, image, summary.png, uncertainty, summary.foreground_fraction, reason)
            response.background = BackgroundTask(capture.write, item)
        return response

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    page = resources.files("wms.serve").joinpath("static/index.html").read_text()

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    app.add_middleware(
        GuardMiddleware,
        metrics=metrics,
        max_body=max_upload + MULTIPART_SLACK,
        max_predictions=settings.max_concurrency + settings.max_queue,
        body_seconds=settings.upload_timeout_seconds,
    )
    return app
