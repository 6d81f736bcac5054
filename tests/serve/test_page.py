"""The web page in headless Chromium: choose a photo, the mask appears over it, aligned, downloadable."""

from __future__ import annotations

import base64
import io
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
from wms.serve.model import load_folder

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "water-meters"


@pytest.fixture(scope="module")
def page_url(exported_model: Path, live_server: Callable[[object], Any]) -> Iterator[str]:
    with live_server(create_app(load_folder(exported_model), ServeSettings())) as live:
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


def test_a_chosen_photo_gets_its_mask_overlaid(browser: Any, page_url: str, photo: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page_url + "/")
    browser.find_element(By.ID, "file").send_keys(str(photo))
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("return document.body.dataset.state") in ("done", "error")
    )
    assert browser.execute_script("return document.body.dataset.state") == "done", browser.find_element(
        By.ID, "status"
    ).text

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
