"""The shared preprocessing: deep and float images reach the model as the 8-bit photo would."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wms.train.preprocess import orient_rgb

GRAY = np.arange(256, dtype=np.uint16).reshape(16, 16)


@pytest.mark.parametrize(
    ("name", "image"),
    [
        ("16-bit", Image.fromarray(GRAY * 257)),
        ("16-bit decoded as I", Image.fromarray(GRAY * 257).convert("I")),
        ("float 0-1", Image.fromarray(GRAY.astype(np.float32) / 255)),
        ("float 0-255", Image.fromarray(GRAY.astype(np.float32))),
    ],
)
def test_deep_and_float_images_keep_their_brightness(name: str, image: Image.Image) -> None:
    rgb = np.asarray(orient_rgb(image))
    assert rgb.shape == (16, 16, 3)
    assert np.abs(rgb[..., 0].astype(int) - GRAY).max() <= 1, name


def test_values_outside_the_usual_ranges_are_stretched() -> None:
    image = Image.fromarray(GRAY.astype(np.float32) * 1000 - 5000)
    rgb = np.asarray(orient_rgb(image))[..., 0]
    assert (rgb.min(), rgb.max()) == (0, 255)
    assert np.abs(rgb.astype(int) - GRAY).max() <= 1
