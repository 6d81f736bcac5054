"""serve.capture on real uvicorn: off by default, and when on, bounded in rate, count and bytes."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from wms.config import ServeSettings
from wms.serve.app import create_app
from wms.serve.capture import MB, WRITERS, Capture, Captured, Inbox, TokenBucket
from wms.serve.model import ServedModel, load_folder

LOGGER = "wms.serve.capture"


class _PaintedSegmenter:
    """Stands in for the model: one crisp window on reddish photos (sure), nothing on bluish ones."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def probability_maps(self, images: list[Image.Image]) -> list[np.ndarray]:
        maps = []
        for img in images:
            pixels = np.asarray(img, np.float32)
            prob = np.zeros((img.height, img.width), np.float32)
            if pixels[..., 0].mean() > pixels[..., 2].mean():
                prob[img.height // 3 : img.height // 2, img.width // 4 : 3 * img.width // 4] = 1
            maps.append(prob)
        return maps


def _photo(seed: int, red: bool = False) -> bytes:
    """A distinct 96x64 noise photo (noise: its JPEG is tens of kB, as photos are), bluish or reddish."""
    pixels = np.random.default_rng(seed).integers(0, 120, (64, 96, 3), dtype=np.uint8)
    pixels[..., 0 if red else 2] += 120
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _post(url: str, data: bytes) -> httpx.Response:
    answer = httpx.post(f"{url}/predict?format=json", files={"file": ("p.png", data)}, timeout=60)
    assert answer.status_code == 200, answer.text  # capture never fails a request
    return answer


def _app(exported_model: Path, **capture: Any) -> Any:
    real = load_folder(exported_model)
    # Every photo of a burst is let in (12 at once here, over the default 2 + 8 places): these tests
    # are about capture's caps; the admission limit has its own tests (test_load.py).
    settings = ServeSettings(max_concurrency=2, max_queue=32, intra_op_threads=1, **capture)
    return create_app(ServedModel(_PaintedSegmenter(real.segmenter.spec), real.card, real.verified), settings)  # type: ignore[arg-type]


def _burst(live_server: Callable[[object], Any], app: Any, photos: list[bytes]) -> float:
    """All photos at once; returns when the server has stopped, so every capture is written."""
    with live_server(app) as live, ThreadPoolExecutor(len(photos)) as pool:
        started = time.monotonic()
        list(pool.map(lambda data: _post(live.url, data), photos))
        return time.monotonic() - started  # leaving the block waits for the background writes


def _inbox(folder: Path) -> dict[str, list[Path]]:
    return {kind: sorted((folder / kind).glob("*")) for kind in ("images", "masks", "meta")}


@pytest.mark.parametrize(("mode", "rate"), [("off", 1.0), ("sample", 0.0)])
def test_off_or_a_zero_sample_keeps_nothing(
    exported_model: Path, live_server: Callable[[object], Any], tmp_path: Path, mode: str, rate: float
) -> None:
    inbox = tmp_path / "inbox"
    app = _app(exported_model, capture=mode, capture_sample_rate=rate, capture_dir=str(inbox))
    _burst(live_server, app, [_photo(i) for i in range(4)])
    assert not inbox.exists()
    assert ServeSettings().capture == "off"


def test_a_client_that_says_capture_false_is_never_kept(
    exported_model: Path, live_server: Callable[[object], Any], tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    app = _app(exported_model, capture="sample", capture_sample_rate=1.0, capture_dir=str(inbox))
    with live_server(app) as live:
        for i in range(3):
            answer = httpx.post(
                f"{live.url}/predict?capture=false", files={"file": ("p.png", _photo(i))}, timeout=60
            )
            assert answer.status_code == 200
        _post(live.url, _photo(9))  # the control: the same service keeps a photo sent without it
    assert len(_inbox(inbox)["meta"]) == 1


CAPS: dict[str, dict[str, Any]] = {
    "rate": {"capture_per_minute": 4},
    "count": {"capture_max_files": 3},
    "bytes": {"capture_max_mb": 0.02},  # about 3 captures of ~7 kB
}


@pytest.mark.parametrize("cap", CAPS, ids=list(CAPS))
def test_a_burst_keeps_to_the_caps(
    exported_model: Path,
    live_server: Callable[[object], Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    cap: str,
) -> None:
    inbox, n = tmp_path / "inbox", 12
    limits = {"capture_per_minute": 1000, "capture_max_files": 100, "capture_max_mb": 100} | CAPS[cap]
    app = _app(exported_model, capture="sample", capture_sample_rate=1.0, capture_dir=str(inbox), **limits)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        seconds = _burst(live_server, app, [_photo(i) for i in range(n)])
    files = _inbox(inbox)
    kept = len(files["meta"])
    assert len(files["images"]) == len(files["masks"]) == kept  # whole captures only
    assert not list(inbox.rglob("*.tmp"))
    total = sum(p.stat().st_size for paths in files.values() for p in paths)
    stopped = [r for r in caplog.records if r.name == LOGGER and "capture stopped" in r.getMessage()]
    if cap == "rate":
        assert 4 <= kept <= 4 + int(seconds * 4 / 60), seconds  # the bucket holds one minute's worth
        assert not stopped
    elif cap == "count":
        assert kept == 3
        assert len(stopped) == 1  # one line when full, not one per refused photo
    else:
        assert 1 <= kept < n and total <= 0.02 * MB
        assert len(stopped) == 1


def _scrape_captures(url: str) -> dict[str, float]:
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    return {
        line.split('outcome="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("wms_captures_total{")
    }


def test_uncertain_photos_are_kept_with_a_pre_label_and_metadata(
    exported_model: Path, live_server: Callable[[object], Any], tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    app = _app(exported_model, capture="uncertain", capture_dir=str(inbox))
    sure, unsure = [_photo(1, red=True), _photo(2, red=True)], [_photo(3), _photo(4)]
    with live_server(app) as live:
        answers = [_post(live.url, data).json() for data in [*sure, *unsure, unsure[0]]]
        deadline = time.monotonic() + 30  # the writes happen after each response
        while sum(_scrape_captures(live.url).values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        outcomes = _scrape_captures(live.url)
    assert [a["uncertainty"]["verdict"] for a in answers] == ["sure"] * 2 + ["check this one"] * 3
    assert outcomes["written"] == 2 and outcomes["duplicate"] == 1  # a photo sent twice is kept once
    files = _inbox(inbox)
    assert len(files["meta"]) == 2
    for data, answer in zip(unsure, answers[2:4], strict=True):
        sha = hashlib.sha256(data).hexdigest()
        text = (inbox / "meta" / f"{sha[:16]}.json").read_text()
        meta = json.loads(text)
        assert meta["upload_sha256"] == sha and meta["upload_bytes"] == len(data)
        assert meta["reason"] == "uncertain" and meta["model_version"] == answer["model_version"]
        assert meta["uncertainty"] == answer["uncertainty"] and meta["uncertainty"]["regions"] == 0
        assert (meta["width"], meta["height"]) == (96, 64)
        assert "127.0.0.1" not in text and "p.png" not in text  # no client address, no file name
        with Image.open(inbox / meta["image"]) as photo:
            assert photo.size == (96, 64) and photo.format == "JPEG" and not photo.getexif()
        with Image.open(inbox / meta["mask"]) as mask, Image.open(io.BytesIO(data)) as sent:
            assert mask.size == sent.size
            answer_mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png_base64"]))))
            assert np.array_equal(np.asarray(mask), answer_mask)


def test_a_slow_capture_is_not_counted_in_the_request_latency(
    exported_model: Path,
    live_server: Callable[[object], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released, writing = threading.Event(), threading.Semaphore(0)

    def slow_write(self: Capture, item: Captured) -> None:  # a slow disk or bucket
        writing.release()
        released.wait(60)

    monkeypatch.setattr(Capture, "write", slow_write)
    app = _app(exported_model, capture="sample", capture_sample_rate=1.0, capture_dir=str(tmp_path))
    with live_server(app) as live:
        try:
            started = time.perf_counter()
            for i in range(3):
                _post(live.url, _photo(i))
            waited = time.perf_counter() - started
            assert all(writing.acquire(timeout=30) for _ in range(3))  # every capture is being written
            scrape = httpx.get(f"{live.url}/metrics").text
        finally:
            released.set()
    samples = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in scrape.splitlines()
        if line.startswith("wms_http_request_duration_seconds_")
        and 'route="/predict"' in line
        and "_bucket" not in line
    }
    # Counted when the answer was sent, while the captures were still being written.
    assert samples.get("wms_http_request_duration_seconds_count") == 3
    assert samples.get("wms_http_request_duration_seconds_sum", float("inf")) <= waited
    assert 'wms_http_requests_total{method="POST",route="/predict",status="200"} 3.0' in scrape


def test_a_hung_inbox_holds_at_most_a_few_captures_and_uploads_still_get_answers(
    exported_model: Path,
    live_server: Callable[[object], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bucket that stops answering must not pile up captures: each holds the photo, decoded, and
    a worker thread that the multipart parser needs for every upload over 1 MB."""
    released = threading.Event()

    def hung_put(self: Inbox, relative: str, data: bytes) -> None:
        released.wait(60)

    monkeypatch.setattr(Inbox, "put", hung_put)
    app = _app(
        exported_model,
        capture="sample",
        capture_sample_rate=1.0,
        capture_per_minute=10_000,
        capture_dir=str(tmp_path / "inbox"),
    )
    large = _photo(99) + b"\0" * (2 * 2**20)  # trailing bytes: spooled to disk, ignored by the decoder
    with live_server(app) as live:
        try:
            for i in range(45):  # more than the 40 worker threads anyio lends by default
                _post(live.url, _photo(i))
            deadline = time.monotonic() + 30
            while sum(_scrape_captures(live.url).values()) < 45 - WRITERS and time.monotonic() < deadline:
                time.sleep(0.05)
            try:
                status: int | str = httpx.post(
                    f"{live.url}/predict", files={"file": ("p.png", large)}, timeout=10
                ).status_code
            except httpx.TimeoutException:
                status = "no answer within 10 s"
            outcomes = _scrape_captures(live.url)
        finally:
            released.set()
    assert status == 200
    assert outcomes["busy"] >= 45 - WRITERS  # dropped at once, and counted


def test_captures_go_to_s3_when_the_inbox_is_a_bucket(
    exported_model: Path, live_server: Callable[[object], Any], s3_bucket: str
) -> None:
    import boto3

    app = _app(
        exported_model, capture="sample", capture_sample_rate=1.0, capture_dir=f"s3://{s3_bucket}/inbox"
    )
    _burst(live_server, app, [_photo(i) for i in range(2)])
    keys = sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert [k.split("/")[1] for k in keys] == ["images"] * 2 + ["masks"] * 2 + ["meta"] * 2
    assert all(k.startswith("inbox/") for k in keys)


def test_the_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(6, clock=lambda: now[0])
    assert sum(bucket.take() for _ in range(10)) == 6  # a burst takes one minute's worth
    now[0] += 9.9
    assert not bucket.take()
    now[0] += 0.2  # 10 s: one token at 6 a minute
    assert bucket.take() and not bucket.take()
    assert not any(TokenBucket(0).take() for _ in range(3))


def test_a_fractional_rate_captures_now_and_then() -> None:
    now = [0.0]
    bucket = TokenBucket(0.5, clock=lambda: now[0])  # serve.capture_per_minute = 0.5
    admitted = []
    for _ in range(60):  # one photo the service wants to keep every minute, for an hour
        admitted.append(bucket.take())
        now[0] += 60
    assert sum(admitted) == 30  # one every two minutes
    assert admitted[:4] == [True, False, True, False]


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_replicas_sharing_an_inbox_keep_to_its_cap_together(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two services capturing into one inbox stop at serve.capture_max_files photos, not twice that."""
    from wms.uncertainty import Assessment

    inbox = (
        str(tmp_path / "inbox") if where == "folder" else f"s3://{request.getfixturevalue('s3_bucket')}/inbox"
    )
    settings = ServeSettings(
        capture="sample", capture_sample_rate=1.0, capture_dir=inbox, capture_max_files=3
    )
    replicas = [Capture(settings, "3", 0.5, count=lambda outcome: None) for _ in range(2)]
    unsure = Assessment(score=0.9, entropy=0.8, uncertain_share=0.9, regions=0, verdict="check")
    for i in range(8):  # the load balancer sends every other photo to each
        image = Image.open(io.BytesIO(_photo(i))).convert("RGB")
        replicas[i % 2].write(Captured(_photo(i), image, b"mask", unsure, 0.0, "sample"))

    import fsspec

    fs, root = fsspec.core.url_to_fs(inbox, skip_instance_cache=True)
    assert len(fs.find(f"{root}/meta")) == 3


def test_capture_resumes_by_itself_once_photos_are_moved_out_of_a_full_inbox(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator empties the full inbox (labelled the photos, moved them out); the service
    keeps photos again within a minute, without a restart, and says so once."""
    from wms.uncertainty import Assessment

    inbox, now, outcomes = tmp_path / "inbox", [1000.0], []
    settings = ServeSettings(
        capture="sample", capture_sample_rate=1.0, capture_dir=str(inbox), capture_max_files=2
    )
    capture = Capture(settings, "3", 0.5, count=outcomes.append, clock=lambda: now[0])
    unsure = Assessment(score=0.9, entropy=0.8, uncertain_share=0.9, regions=0, verdict="check")

    def offer(seed: int) -> str | None:
        reason = capture.wants(unsure)
        if reason is not None:
            image = Image.open(io.BytesIO(_photo(seed))).convert("RGB")
            capture.write(Captured(_photo(seed), image, b"mask", unsure, 0.0, reason))
        return reason

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for seed in range(3):
            offer(seed)
        assert outcomes == ["written", "written", "full"]
        assert offer(3) is None and outcomes[-1] == "full"  # full: not measured again for every photo
        for path in inbox.rglob("*.*"):  # the operator moves the photos out
            path.unlink()
        now[0] += 30
        assert offer(4) is None  # within the minute: still counted full
        now[0] += 31
        assert offer(5) == "sample" and outcomes[-1] == "written"
    assert len(_inbox(inbox)["meta"]) == 1
    said = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert [line.split(":")[0] for line in said] == ["capture stopped", "capture resumed"]


def test_a_long_running_service_remembers_a_bounded_number_of_captured_photos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repeats of a photo whose capture was moved out are refused from memory, which keeps only
    the latest TAKEN_KEPT ids: a service capturing for months does not grow without end."""
    from wms.serve import capture as module
    from wms.uncertainty import Assessment

    monkeypatch.setattr(module, "TAKEN_KEPT", 3)
    inbox, outcomes = tmp_path / "inbox", []
    settings = ServeSettings(capture="sample", capture_sample_rate=1.0, capture_dir=str(inbox))
    capture = Capture(settings, "3", 0.5, count=outcomes.append)
    unsure = Assessment(score=0.9, entropy=0.8, uncertain_share=0.9, regions=0, verdict="check")

    def send(seed: int) -> None:
        image = Image.open(io.BytesIO(_photo(seed))).convert("RGB")
        capture.write(Captured(_photo(seed), image, b"mask", unsure, 0.0, "sample"))

    for seed in range(5):
        send(seed)
    for path in inbox.rglob("*.*"):  # moved out for labelling
        path.unlink()
    send(4)  # among the latest three: still refused as a repeat
    send(0)  # the oldest, forgotten: kept again
    assert outcomes == ["written"] * 5 + ["duplicate", "written"]
    assert len(capture.taken) == 3


def test_a_spool_counts_what_the_inbox_it_feeds_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In the cluster the pod writes to its node's spool, which the node empties into S3 every
    minute: the caps count what the node last reported the S3 inbox holds, with what waits in the
    spool, so moving photos out to S3 does not lift them; the log names the real inbox."""
    from wms.serve.capture import UPSTREAM
    from wms.uncertainty import Assessment

    spool, now, outcomes = tmp_path / "spool", [1000.0], []
    spool.mkdir()
    report = spool / UPSTREAM
    report.write_text(json.dumps({"inbox": "s3://b/wms/inbox", "photos": 2, "bytes": 1000}))
    settings = ServeSettings(
        capture="sample", capture_sample_rate=1.0, capture_dir=str(spool), capture_max_files=3
    )
    capture = Capture(settings, "3", 0.5, count=outcomes.append, clock=lambda: now[0])
    unsure = Assessment(score=0.9, entropy=0.8, uncertain_share=0.9, regions=0, verdict="check")

    def offer(seed: int) -> None:
        if capture.wants(unsure):
            image = Image.open(io.BytesIO(_photo(seed))).convert("RGB")
            capture.write(Captured(_photo(seed), image, b"mask", unsure, 0.0, "sample"))

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        offer(0)
        for path in spool.glob("*/*"):  # the node sent it on: the inbox now holds 3
            path.unlink()
        report.write_text(json.dumps({"inbox": "s3://b/wms/inbox", "photos": 3, "bytes": 1500}))
        offer(1)
        assert outcomes == ["written", "full"]
        report.write_text(json.dumps({"inbox": "s3://b/wms/inbox", "photos": 0, "bytes": 0}))  # labelled
        now[0] += 61
        offer(2)
        assert outcomes[-1] == "written"
        report.write_text("{not json")  # a broken report: the spool alone counts, with a line
        now[0] += 61
        offer(3)
        assert outcomes[-1] == "written"
    said = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert said[0].startswith(f"capture stopped: the inbox s3://b/wms/inbox (through {spool}) holds 3 photos")
    assert said[1].startswith("capture resumed") and f"{UPSTREAM} is unreadable" in said[2]
