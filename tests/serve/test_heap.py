"""A server that has answered photos gives the memory they took back to the system once none is in
flight, so an idle pod holds about what it held before them, not what its busiest moment left in
malloc's heaps. How much that is (729-911 MiB kept after 40-megapixel photos without it, 219-262
MiB with it) is measured by benchmarks/serve_memory.py: a process's resident memory moves too much
with the machine's load for a test to tell the two apart every time."""

from __future__ import annotations

import io
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from wms.config import ServeSettings
from wms.serve import app as app_module
from wms.serve import heap
from wms.serve.app import create_app
from wms.serve.model import load_folder


def test_the_memory_is_given_back_after_each_prediction_that_leaves_none_in_flight(
    exported_model: Path, live_server: Callable[[object], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    given_back: list[float] = []
    monkeypatch.setattr(app_module, "release_freed_memory", lambda: given_back.append(time.monotonic()))
    photo = io.BytesIO()
    Image.effect_noise((640, 480), 40).convert("RGB").save(photo, "JPEG")
    app = create_app(load_folder(exported_model), ServeSettings(max_concurrency=2, intra_op_threads=1))
    with live_server(app) as live:
        for _ in range(3):
            files = {"file": ("p.jpg", photo.getvalue())}
            answer = httpx.post(f"{live.url}/predict", files=files, timeout=60)
            assert answer.status_code == 200, answer.text
        assert httpx.get(f"{live.url}/health", timeout=30).status_code == 200
        deadline = time.monotonic() + 10
        while len(given_back) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
    assert len(given_back) == 3  # once per prediction (each left none in flight), not for /health


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_on_glibc_the_memory_is_given_back_with_malloc_trim() -> None:
    assert heap._TRIM is not None
    heap.release_freed_memory()  # and calling it is harmless
