"""/metrics on real uvicorn: what clients send cannot grow the number of series."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from wms.config import ServeSettings
from wms.serve.app import create_app
from wms.serve.model import load_folder

SETTINGS = ServeSettings(max_concurrency=1, intra_op_threads=1)


def _request_series(url: str) -> set[tuple[str, str, str]]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (sample.labels["method"], sample.labels["route"], sample.labels["status"])
        for family in text_string_to_metric_families(text)
        if family.name == "wms_http_requests"
        for sample in family.samples
        if sample.name == "wms_http_requests_total"
    }


def test_made_up_methods_share_one_series(exported_model: Path, live_server: Callable[[object], Any]) -> None:
    with live_server(create_app(load_folder(exported_model), SETTINGS)) as live:
        for i in range(20):
            answer = httpx.request(f"X{i}RANDOM", f"{live.url}/predict")
            assert answer.status_code == 405
        assert httpx.request("PATCH", f"{live.url}/health").status_code == 405
        series = _request_series(live.url)
    assert ("OTHER", "/predict", "405") in series
    assert ("PATCH", "/health", "405") in series  # the usual methods keep their names
    assert {method for method, _, _ in series} <= {"GET", "POST", "PATCH", "OTHER"}
