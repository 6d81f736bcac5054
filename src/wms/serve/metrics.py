"""Prometheus metrics of one server: requests, latency, errors, in-flight work, readiness, the
model's version and test Dice, and how much of each photo the model calls counter window.

The chart's Grafana dashboard and alert rules (devops/helm/wms-model) query these names;
tests/deploy/test_monitoring.py checks that every name they use is exported here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

ROUTES = ("/", "/health", "/ready", "/model", "/predict", "/metrics", "/docs", "/openapi.json")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Counter windows cover about 1-4 % of a meter photo (the labelled set: median 1.9 %, 95th
# percentile 3.8 %), so the buckets are fine there; 0 alone counts the empty masks, and the
# upper ones catch a model that paints half the photo.
FRACTION_BUCKETS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0)


class Metrics:
    """A registry of its own per app, so several servers in one process never share counters."""

    def __init__(self, model_version: str, test_dice: float | None = None) -> None:
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
        self.foreground = Histogram(
            "wms_predicted_foreground_fraction",
            "Share of a photo's pixels in its predicted mask, per successful prediction",
            buckets=FRACTION_BUCKETS,
            registry=self.registry,
        )
        self._ready = Gauge(
            "wms_ready",
            "1 while /ready answers 200 (the app has started and serves), else 0",
            registry=self.registry,
        )
        self.is_ready = False
        labels = {"version": model_version}
        if test_dice is not None:  # a model folder without a registry record has no test score
            labels["test_dice"] = f"{test_dice:.4f}"
        info = Gauge(
            "wms_model_info",
            "The served model (value 1): its version and, when its record has it, its test Dice",
            list(labels),
            registry=self.registry,
        )
        info.labels(**labels).set(1)

    @staticmethod
    def route(path: str) -> str:
        """The route label: known paths as they are, anything else as one label (bounded cardinality)."""
        return path if path in ROUTES else "other"

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)
        if status >= 400:
            self.errors.labels(route=route, status=str(status)).inc()

    def set_ready(self, ready: bool) -> None:
        """What /ready answers, and wms_ready with it."""
        self.is_ready = ready
        self._ready.set(1 if ready else 0)

    @contextmanager
    def inflight(self) -> Iterator[None]:
        self.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight.dec()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
