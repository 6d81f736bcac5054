"""The web page in headless Chromium: choose a photo, the mask appears over it, aligned, downloadable,
with the model, how sure it is and the last predictions beside it, laid out without overlaps."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from wms.config import ServeSettings
from wms.data.synth import synthesize
from wms.serve.app import create_app
from wms.serve.model import ModelCard, load_folder
from wms.uncertainty import VERDICTS

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "water-meters"


@pytest.fixture(scope="module")
def page_url(exported_model: Path, live_server: Callable[[object], Any]) -> Iterator[str]:
    sha = load_folder(exported_model).card.onnx_sha256
    card = ModelCard(version="7", onnx_sha256=sha, metrics={"test_dice": 0.86341})
    with live_server(create_app(load_folder(exported_model, card), ServeSettings())) as live:
        yield live.url


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A real photo (one stored sideways with an EXIF orientation when there is one), else a synthetic one."""
    images = REAL_DATA / "images"
    if images.is_dir():
        candidates = sorted(images.glob("*.jpg"))[:100]
        for path in candidates:
            with Image.open(path) as img:
                if img.getexif().get(0x0112, 1) in (6, 8):
                    return path
        return candidates[0]
    synthesize(tmp_path / "synth", count=1, size=512, seed=3)
    return next((tmp_path / "synth" / "images").iterdir())


def _canvas_pixels(driver: Any, element_id: str) -> np.ndarray:
    url = driver.execute_script(f"return document.getElementById('{element_id}').toDataURL('image/png')")
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def _segment(browser: Any, photo: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_script("document.body.dataset.state = 'idle'")
    browser.find_element(By.ID, "file").send_keys(str(photo))
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("return document.body.dataset.state") in ("done", "error")
    )
    assert browser.execute_script("return document.body.dataset.state") == "done", browser.find_element(
        By.ID, "status"
    ).text


def test_a_chosen_photo_gets_its_mask_overlaid(browser: Any, page_url: str, photo: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(page_url + "/")
    _segment(browser, photo)

    overlay = browser.find_element(By.ID, "overlay")
    assert overlay.is_displayed()
    expected = httpx.post(f"{page_url}/predict", files={"file": (photo.name, photo.read_bytes())})
    mask = np.asarray(Image.open(io.BytesIO(expected.content))) > 127
    drawn = _canvas_pixels(browser, "overlay")
    assert drawn.shape[:2] == mask.shape  # at the photo's size after EXIF orientation
    red = (drawn[..., 3] > 0) & (drawn[..., 0] == 255) & (drawn[..., 1] == 0)
    # The yellow box outline is drawn on top of the mask; away from it, red is exactly the mask.
    assert (red == mask).mean() > 0.98
    assert mask.any(), "the test model should mark some pixels"

    link = browser.find_element(By.ID, "download")
    assert link.is_displayed() and link.get_attribute("href").startswith("data:image/png;base64,")
    downloaded = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(link.get_attribute("href").split(",", 1)[1])))
    )
    assert ((downloaded > 127) == mask).all()
    assert photo.stem in link.get_attribute("download")


# What a person looks at: none of these may cover another or run past the window's width.
PARTS = ("intro", "drop", "result", "model-info", "verdict", "thumbs")
RECTS = """return Object.fromEntries(arguments[0].map((id) => {
  const r = document.getElementById(id).getBoundingClientRect();
  return [id, [r.left, r.top, r.right, r.bottom]];
}));"""


def test_the_page_at_1200x900_shows_each_part_apart(
    browser: Any, page_url: str, photo: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        browser.get(page_url + "/")
        for _ in range(2):  # two predictions: two thumbnails
            _segment(browser, photo)
        shot = tmp_path / "page-1200x900.png"
        browser.save_screenshot(str(shot))
        rects: dict[str, list[float]] = browser.execute_script(RECTS, list(PARTS))
        width = browser.execute_script("return window.innerWidth")
        texts = {
            i: browser.find_element(By.ID, i).text
            for i in ("verdict", "model-version", "model-dice", "latency")
        }
        thumbs = browser.find_elements(By.CSS_SELECTOR, "#thumbs img")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    with Image.open(shot) as img:
        assert img.size == (1200, 900)
    assert width == 1200
    for name, (left, top, right, bottom) in rects.items():
        assert right > left and bottom > top, f"{name} is not shown"
        assert left >= 0 and right <= width, f"{name} runs out of the window: {left:.0f}..{right:.0f}"
    for i, a in enumerate(PARTS):
        for b in PARTS[i + 1 :]:
            (al, at, ar, ab), (bl, bt, br, bb) = rects[a], rects[b]
            overlap = max(0.0, min(ar, br) - max(al, bl)) * max(0.0, min(ab, bb) - max(at, bt))
            assert overlap < 1, f"{a} {rects[a]} overlaps {b} {rects[b]}"
    assert texts["verdict"] in VERDICTS
    assert texts["model-version"] == "7" and texts["model-dice"] == "0.863"
    assert texts["latency"].endswith("ms") and float(texts["latency"].split()[0]) > 0
    assert len(thumbs) == 2 and all(t.get_attribute("src").startswith("data:image/jpeg") for t in thumbs)


def test_a_person_can_keep_their_photos_out_of_capture(
    browser: Any, exported_model: Path, live_server: Callable[[object], Any], photo: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    other = tmp_path / "other.png"  # a second photo: the same one twice would be kept once anyway
    with Image.open(photo) as img:
        img.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    inbox = tmp_path / "inbox"
    settings = ServeSettings(capture="sample", capture_sample_rate=1.0, capture_dir=str(inbox))
    with live_server(create_app(load_folder(exported_model), settings)) as live:
        browser.get(live.url + "/")
        note = browser.find_element(By.ID, "capture-note")
        WebDriverWait(browser, 30).until(lambda _: note.is_displayed())
        assert "may be kept" in note.text
        browser.find_element(By.ID, "keep-out").click()
        _segment(browser, photo)
        browser.find_element(By.ID, "keep-out").click()
        _segment(browser, other)
    kept = [json.loads(p.read_text()) for p in inbox.glob("meta/*.json")]  # all written by now
    assert [meta["upload_sha256"] for meta in kept] == [hashlib.sha256(other.read_bytes()).hexdigest()]
