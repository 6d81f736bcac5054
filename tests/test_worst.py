"""The worst photos as a person sees them: overlays in two colours, and an index page in Chromium."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from wms.data.pairs import find_pairs
from wms.scores import ImageScore
from wms.train.preprocess import mask_to_array, open_mask
from wms.worst import BOTH, PREDICTED, TRUE, draw_overlay, pick_worst, write_worst


def _has(pixels: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool((pixels == colour).all(axis=-1).any())


def test_true_and_predicted_masks_are_told_apart_and_the_overlap_shows() -> None:
    photo = Image.new("RGB", (100, 60), (40, 40, 40))
    true, predicted = np.zeros((60, 100), bool), np.zeros((60, 100), bool)
    true[10:50, 10:50], predicted[10:50, 30:90] = True, True
    pixels = np.asarray(draw_overlay(photo, true, predicted, ImageScore("meter-7", 0.5, 0.33)))

    assert pixels.shape == (307, 512, 3)  # drawn at a readable size, the photo's shape kept
    assert _has(pixels, TRUE) and _has(pixels, PREDICTED)  # both outlines
    missed, extra, both = pixels[150, 100], pixels[150, 400], pixels[150, 200]  # inside each region
    assert missed[1] > missed[0] and extra[0] > extra[1] < extra[2]  # green tint; magenta tint
    assert both.min() > 100 and not _has(pixels[140:160, 190:210], BOTH)  # lighter, but the photo shows


def test_the_worst_are_the_lowest_dice_ties_by_id() -> None:
    scores = [ImageScore("b", 0.2, 0.1), ImageScore("a", 0.2, 0.1), ImageScore("c", 0.9, 0.8)]
    assert [s.id for s in pick_worst(scores, 2)] == ["a", "b"]
    assert len(pick_worst(scores, 10)) == 3


@pytest.fixture
def index_page(make_batch: Callable[..., Path], tmp_path: Path) -> Path:
    """An index of five photos whose "predictions" are their true masks shifted by 0..4 pixels."""
    pairs = find_pairs(make_batch(count=5)).pairs
    masks = [np.roll(mask_to_array(open_mask(p.mask)), 3 * i, axis=1) for i, p in enumerate(pairs)]
    scores = [ImageScore(p.id, dice=1.0 - 0.2 * i, iou=0.9 - 0.2 * i) for i, p in enumerate(pairs)]
    return write_worst(tmp_path / "worst", scores, pairs, masks, "five photos")


def test_the_index_page_shows_every_overlay_worst_first(browser: Any, index_page: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(index_page.as_uri())
    items = browser.find_elements(By.CSS_SELECTOR, "ol.worst li")
    assert len(items) == 5
    dice = [float(item.find_element(By.CLASS_NAME, "dice").text) for item in items]
    assert dice == sorted(dice) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    loaded = browser.execute_script(
        "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)"
    )
    assert loaded == [512] * 5


def test_the_overlays_keep_their_colours_in_a_third_of_the_bytes_of_a_png(index_page: Path) -> None:
    """Every training run keeps 16 overlays in MLflow, also once `wms model prune` took its model:
    drawn on photos, they are stored as photos (JPEG), and the outlines keep their colours."""
    import io

    overlays = sorted(index_page.parent.glob("*.jpg"))
    assert len(overlays) == 5 and not list(index_page.parent.glob("*.png"))
    for path in overlays:
        with Image.open(path) as img:
            assert img.format == "JPEG"
            pixels = np.asarray(img.convert("RGB")).astype(int)
            as_png = io.BytesIO()
            img.save(as_png, format="PNG", compress_level=1)
        assert path.stat().st_size * 3 < as_png.tell(), path.name
        for colour in (TRUE, PREDICTED):  # the 2-pixel outlines, within JPEG's error
            assert (np.abs(pixels - colour).max(axis=-1) < 40).sum() > 100, (path.name, colour)
