"""Prometheus metrics of one server: requests, latency, errors, connections cut because their
headers never ended, in-flight work, readiness, the model's version and test Dice, how much of
each photo the model calls counter window, how sure it is of it, the photos kept for labelling,
and when the server started.

The chart's Grafana dashboard and alert rules (devops/helm/wms-model) query these names;
tests/deploy/test_monitoring.py checks that every name they use is exported here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# HTTP methods as labels: uvicorn passes any token a client sends as the method, so anything
# else is counted as OTHER (each made-up name would otherwise be a new series for good).
METHODS = ("GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH")
ROUTES = ("/", "/health", "/ready", "/model", "/predict", "/metrics", "/docs", "/openapi.json")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Counter windows cover about 1-4 % of a meter photo (the labelled set: median 1.9 %, 95th
# percentile 3.8 %), so the buckets are fine there; 0 alone counts the empty masks, and the
# upper ones catch a model that paints half the photo.
FRACTION_BUCKETS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0)
# wms.uncertainty's score: 0.5 is where the verdict turns to "check this one", 1.0 counts the
# photos with no window at all.
UNCERTAINTY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 1.0)
REGION_BUCKETS = (0, 1, 2, 3, 5, 10, 20)
CAPTURE_OUTCOMES = ("written", "duplicate", "rate_limited", "full", "busy", "failed")


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
        # Counted by the HTTP protocol (wms.serve.protocol), not the app: such a request never reaches it.
        self.header_timeouts = Counter(
            "wms_request_header_timeouts",
            "Connections answered 408 and closed because their request headers were not all in within "
            "serve.header_timeout_seconds (slow or hostile clients)",
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
        self.uncertainty = Histogram(
            "wms_prediction_uncertainty",
            "Uncertainty score of each successful prediction (0 sure ... 1 unsure; wms.uncertainty)",
            buckets=UNCERTAINTY_BUCKETS,
            registry=self.registry,
        )
        self.regions = Histogram(
            "wms_prediction_regions",
            "Connected regions of each predicted mask (1 for a single counter window)",
            buckets=REGION_BUCKETS,
            registry=self.registry,
        )
        self.captures = Counter(
            "wms_captures",
            "Photos the service wanted to keep for labelling (serve.capture), by what became of them",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in CAPTURE_OUTCOMES:  # every series from the start, so rates work from zero
            self.captures.labels(outcome=outcome)
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
        # When this server started: the drift alert tells a release deployed after the last
        # report from a kept older one by it.
        Gauge(
            "wms_started_seconds", "When this server started (Unix time)", registry=self.registry
        ).set_to_current_time()

    @staticmethod
    def route(path: str) -> str:
        """The route label: known paths as they are, anything else as one label (bounded cardinality)."""
        return path if path in ROUTES else "other"

    @staticmethod
    def method(name: str) -> str:
        """The method label: the usual methods as they are, anything else as OTHER (bounded cardinality)."""
        return name if name in METHODS else "OTHER"

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request; `method` is the client's, mapped by `method()` here."""
        self.requests.labels(method=self.method(method), route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)
        if status >= 400:
            self.errors.labels(route=route, status=str(status)).inc()

    def captured(self, outcome: str) -> None:
        """Count one capture decision's outcome (one of CAPTURE_OUTCOMES)."""
        self.captures.labels(outcome=outcome).inc()

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
