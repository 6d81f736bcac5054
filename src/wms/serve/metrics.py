"""Prometheus metrics of one server: requests, latency, errors, in-flight work, model version."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

ROUTES = ("/", "/health", "/ready", "/model", "/predict", "/metrics", "/docs", "/openapi.json")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """A registry of its own per app, so several servers in one process never share counters."""

    def __init__(self, model_version: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "wms_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.errors = Counter(
            "wms_http_errors",
            "HTTP responses with status 4xx or 5xx",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "wms_http_request_duration_seconds",
            "Time from request to response",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "wms_inference_duration_seconds",
            "Decode, model and mask encoding of one photo",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "wms_inferences_in_flight", "Inferences running or waiting", registry=self.registry
        )
        info = Gauge(
            "wms_model_info", "The served model version (value 1)", ["version"], registry=self.registry
        )
        info.labels(version=model_version).set(1)

    @staticmethod
    def route(path: str) -> str:
        """The route label: known paths as they are, anything else as one label (bounded cardinality)."""
        return path if path in ROUTES else "other"

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)
        if status >= 400:
            self.errors.labels(route=route, status=str(status)).inc()

    @contextmanager
    def inflight(self) -> Iterator[None]:
        self.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight.dec()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
