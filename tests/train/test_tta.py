"""Flip test-time augmentation: part of the saved model, so every way of predicting uses it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from wms.data.pairs import find_pairs
from wms.data.synth import synthesize
from wms.parity import check_onnx_parity
from wms.train.export import OnnxSegmenter, export_onnx
from wms.train.model import build_model
from wms.train.segmenter import ONNX_FILE, SPEC_FILE, ModelSpec, Segmenter


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tta-data")
    synthesize(root, count=4, size=48, seed=5)
    return root


@pytest.fixture(scope="module")
def with_tta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained (random, so asymmetric) U-Net saved with tta on, and exported."""
    import torch

    torch.manual_seed(0)
    spec = ModelSpec("unet", 32, 0.5, {"base_channels": 4, "depth": 2}, tta=True)
    segmenter = Segmenter(build_model(spec.architecture, **spec.kwargs), spec)
    folder = tmp_path_factory.mktemp("tta") / "model"
    segmenter.save(folder)
    export_onnx(segmenter, folder / ONNX_FILE)
    return folder


def _probabilities(segmenter: Segmenter | OnnxSegmenter, image: Image.Image) -> np.ndarray:
    from wms.train.preprocess import image_to_array

    probs = segmenter.probabilities(image_to_array(image, segmenter.spec.image_size)[None])
    return np.asarray(probs)[0, 0]


def test_a_mirrored_photo_gets_the_mirrored_prediction(with_tta: Path, photos: Path) -> None:
    photo = Image.open(find_pairs(photos).pairs[0].image).convert("RGB")
    mirrored = ImageOps.mirror(photo)
    for segmenter in (Segmenter.load(with_tta), OnnxSegmenter.load(with_tta, threads=1)):
        plain = _probabilities(segmenter, photo)
        assert np.allclose(_probabilities(segmenter, mirrored), plain[:, ::-1], atol=1e-5)
    # Without tta the same weights are not symmetric: the check above has something to find.
    spec = json.loads((with_tta / SPEC_FILE).read_text())
    assert spec["tta"] is True
    no_tta = Segmenter.load(with_tta)
    no_tta = Segmenter(no_tta.network, replace(no_tta.spec, tta=False))
    assert not np.allclose(
        _probabilities(no_tta, mirrored), _probabilities(no_tta, photo)[:, ::-1], atol=1e-3
    )


def test_the_onnx_export_holds_both_passes(with_tta: Path, photos: Path) -> None:
    pairs = find_pairs(photos).pairs[:4]
    assert check_onnx_parity(with_tta, pairs, 0.999).agreement >= 0.999


def test_a_spec_from_before_tta_loads_without_it(with_tta: Path, tmp_path: Path) -> None:
    spec = json.loads((with_tta / SPEC_FILE).read_text())
    del spec["tta"]
    (tmp_path / SPEC_FILE).write_text(json.dumps(spec))
    assert ModelSpec.read(tmp_path / SPEC_FILE).tta is False
