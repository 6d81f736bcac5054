"""The uncertainty score on synthetic probability maps: what a person would call sure is sure."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from wms.train.export import resize_bilinear
from wms.uncertainty import CHECK, SURE, VERDICTS, Assessment, assess

H, W = 240, 320


def _box(top: int, left: int, height: int, width: int) -> np.ndarray:
    out = np.zeros((H, W), np.float32)
    out[top : top + height, left : left + width] = 1
    return out


def crisp(*boxes: np.ndarray) -> np.ndarray:
    """Windows with sharp edges: a trained model's map after a light blur (1 px)."""
    return ndimage.gaussian_filter(np.maximum.reduce(boxes), 1.0).astype(np.float32)


WINDOW = _box(100, 80, 30, 140)  # 4200 px: about 5 % of the photo, like a counter window
MAPS: dict[str, np.ndarray] = {
    "one crisp window": crisp(WINDOW),
    "a crisp window and a speck": crisp(WINDOW, _box(20, 20, 4, 4)),
    "nothing found": np.full((H, W), 0.02, np.float32),
    "two windows": crisp(WINDOW, _box(180, 80, 30, 140)),
    "a blurry window": (0.8 * ndimage.gaussian_filter(WINDOW, 9.0)).astype(np.float32),
    "a faint window": 0.55 * crisp(WINDOW),
}


@pytest.fixture(scope="module")
def assessed() -> dict[str, Assessment]:
    return {name: assess(prob, 0.5) for name, prob in MAPS.items()}


def test_a_crisp_single_window_is_sure(assessed: dict[str, Assessment]) -> None:
    for name in ("one crisp window", "a crisp window and a speck"):
        a = assessed[name]
        assert a.verdict == SURE and a.score < 0.5, (name, a)
    assert assessed["one crisp window"].regions == 1
    assert assessed["a crisp window and a speck"].regions == 2  # counted, but a speck is no rival


@pytest.mark.parametrize("name", ["nothing found", "two windows", "a blurry window", "a faint window"])
def test_no_window_several_or_a_blurry_one_says_check(assessed: dict[str, Assessment], name: str) -> None:
    assert assessed[name].verdict == CHECK and assessed[name].score >= 0.5


def test_the_score_ranks_photos_as_a_person_would(assessed: dict[str, Assessment]) -> None:
    a = assessed
    assert a["nothing found"].score == 1.0 and a["nothing found"].regions == 0
    assert a["two windows"].regions == 2 and a["two windows"].score == pytest.approx(1.0)
    assert a["one crisp window"].score <= a["a crisp window and a speck"].score < a["a blurry window"].score
    # Entropy is reported beside the score: a blurry window is far less certain pixel by pixel.
    assert a["a blurry window"].entropy > 2 * a["one crisp window"].entropy
    assert a["a blurry window"].uncertain_share > 0.5 > a["one crisp window"].uncertain_share


def test_regions_are_eight_connected() -> None:
    prob = np.zeros((20, 20), np.float32)
    prob[2:6, 2:6] = prob[6:10, 6:10] = 1  # corners touch
    prob[14:18, 14:18] = 1
    assert assess(prob, 0.5).regions == 2


def test_the_score_does_not_depend_on_the_photo_size() -> None:
    small = MAPS["one crisp window"]
    large = resize_bilinear(small, 4 * H, 4 * W)  # how a model's map reaches a 1280x960 photo
    a, b = assess(small, 0.5), assess(large, 0.5)
    assert b.regions == 1 and b.verdict == a.verdict
    assert b.score == pytest.approx(a.score, abs=0.05)


def test_to_dict_is_the_json_every_consumer_reads(assessed: dict[str, Assessment]) -> None:
    d = assessed["two windows"].to_dict()
    assert set(d) == {"score", "entropy", "uncertain_share", "regions", "verdict"}
    assert d["verdict"] in VERDICTS and isinstance(d["regions"], int)
    assert json.loads(json.dumps(d)) == d
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        assess(np.zeros((1, H, W), np.float32), 0.5)


def test_it_needs_neither_torch_nor_onnxruntime() -> None:
    code = (
        "import sys, wms.uncertainty; print(sorted(m for m in ('torch', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
