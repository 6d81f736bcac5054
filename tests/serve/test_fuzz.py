"""Schemathesis fuzzes /predict and /ready from the service's own OpenAPI spec: no input gives a 5xx.

The cases come from `APIOperation.as_strategy()` under a plain Hypothesis `@given`: the
schemathesis pytest plugin (`from_fixture`) does not run on pytest 9 yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from wms.config import ServeSettings
from wms.serve.app import create_app
from wms.serve.model import load_folder

EXAMPLES = 50


@pytest.fixture(scope="module")
def fuzzed_url(exported_model: Path, live_server: Callable[[object], Any]) -> Iterator[str]:
    app = create_app(load_folder(exported_model), ServeSettings(max_upload_mb=1, max_pixels=1_000_000))
    with live_server(app) as live:
        yield live.url


@pytest.mark.parametrize(
    ("path", "method", "mode"),
    [
        ("/predict", "POST", GenerationMode.POSITIVE),
        ("/predict", "POST", GenerationMode.NEGATIVE),
        ("/ready", "GET", GenerationMode.POSITIVE),  # no parameters: nothing to break
    ],
    ids=["predict-positive", "predict-negative", "ready"],
)
def test_no_input_makes_the_service_fail(
    fuzzed_url: str, path: str, method: str, mode: GenerationMode
) -> None:
    """Positive cases follow the spec (any bytes as the file); negative ones break it on purpose."""
    schema = schemathesis.openapi.from_url(f"{fuzzed_url}/openapi.json")
    operation = schema[path][method]
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def call(case: Any) -> None:
        response = case.call(base_url=fuzzed_url)
        statuses.append(response.status_code)
        assert response.status_code < 500, (
            f"{case.as_curl_command()} -> {response.status_code} {response.text}"
        )
        if response.status_code >= 400:
            assert response.json()["error"]

    call()
    assert statuses, "hypothesis generated no case"
