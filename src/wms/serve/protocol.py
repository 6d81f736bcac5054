"""The HTTP protocol `wms serve` runs on: uvicorn's h11 protocol, with a deadline for request headers.

    http = header_deadline_protocol(settings.header_timeout_seconds, app.state.metrics.header_timeouts)
    uvicorn.Config(app, http=http)

uvicorn has no timeout for reading a request's headers, and every byte that arrives stops its
keep-alive timer, so a client that sends one header byte every few seconds (slowloris) holds
its connection, and one of the process's file descriptors, for as long as it likes; a thousand
of them and the server can accept no one else. Here a connection must have sent a request's
whole head within the deadline of opening, and again within the deadline of each answer when it
is kept alive; otherwise it gets 408 and is closed (one still sending the body of a request that
was answered before it was read, a 413 or 503, is just closed). A request being served is left
alone: the time its body takes is GuardMiddleware's (serve.upload_timeout_seconds). uvicorn's own
limit_concurrency would make things worse, not better: it counts these connections too, closes
none of them, and answers 503 to every complete request once they reach it.

The app never sees a request whose head never came, so its request counters cannot count these
408s: the protocol counts each on the counter it is given (wms_request_header_timeouts_total on
the app's /metrics), and an operator sees when clients are being cut.

The subclass hooks only methods that uvicorn's H11Protocol has had, with these meanings, from
0.30 (the oldest pyproject allows) to the version in constraints.txt.
"""

from __future__ import annotations

import asyncio
import json

import h11
from prometheus_client import Counter
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineProtocol(H11Protocol):
    """H11Protocol that closes a connection whose request head is not whole by `header_seconds`."""

    header_seconds: float = 10.0
    timeouts: Counter | None = None  # counts the 408s
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may already have started a pipelined request
        self._start_header_deadline()  # for the next request on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_deadline()
        super().connection_lost(exc)

    def _start_header_deadline(self) -> None:
        self._stop_header_deadline()
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_seconds, self._header_deadline_passed)

    def _stop_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline_passed(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:  # gone, or a WebSocket
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served; the next deadline starts with its answer
        if self.conn.our_state is h11.IDLE:  # nothing half-answered: a 408 can go out whole
            slow = (
                f"the request's headers were not complete after {self.header_seconds:g} s "
                "(serve.header_timeout_seconds); send them at once"
            )
            body = json.dumps({"error": slow}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            answer = h11.Response(status_code=408, headers=headers, reason=b"Request Timeout")
            for event in (answer, h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event) or b"")
            if self.timeouts is not None:
                self.timeouts.inc()
        self.transport.close()


def upload_too_slow(seconds: float) -> str:
    """The 408's message to a client whose upload was not whole `seconds` after its headers, the same
    from `wms serve` and the local deploy's proxy (whichever gives up first)."""
    return (
        f"the upload was not complete after {seconds:g} s (serve.upload_timeout_seconds); "
        "send it again over a faster connection"
    )


def header_deadline_protocol(seconds: float, timeouts: Counter | None = None) -> type[HeaderDeadlineProtocol]:
    """The protocol class for uvicorn.Config(http=...), with a deadline of `seconds` for headers;
    each 408 it sends counts on `timeouts`."""
    attributes = {"header_seconds": seconds, "timeouts": timeouts}
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), attributes)
