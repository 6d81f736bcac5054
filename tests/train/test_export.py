"""ONNX export: ONNX Runtime gives PyTorch's probabilities and masks, on synthetic and real photos."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from wms.config import TrainSettings
from wms.data.pairs import find_pairs
from wms.data.synth import synthesize
from wms.errors import RegistryError
from wms.train.export import OnnxSegmenter, export_onnx, resize_bilinear
from wms.train.loop import train
from wms.train.preprocess import image_to_array, open_image
from wms.train.segmenter import ONNX_FILE, Segmenter

REAL_DATA = Path(__file__).resolve().parents[3] / "shared/datasets/water-meters"
TINY = {"image_size": 32, "base_channels": 4, "depth": 2, "batch_size": 8, "epochs": 2, "device": "cpu"}
MAX_PROB_DIFF = 1e-4
MIN_AGREEMENT = 0.999


def _trained_and_exported(
    data: Path, folder: Path, settings: dict[str, object]
) -> tuple[Segmenter, OnnxSegmenter]:
    pairs = find_pairs(data).pairs
    segmenter = train(TrainSettings(**settings), pairs[:18], pairs[18:]).segmenter
    segmenter.save(folder)
    export_onnx(segmenter, folder / ONNX_FILE)
    return segmenter, OnnxSegmenter.load(folder, threads=1)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    synthesize(root / "data", count=24, size=64, seed=1)
    return root


@pytest.fixture(scope="module")
def tiny(synth_dir: Path) -> tuple[Segmenter, OnnxSegmenter]:
    return _trained_and_exported(synth_dir / "data", synth_dir / "tiny", TINY)


@pytest.fixture(scope="module")
def at_64(synth_dir: Path) -> tuple[Segmenter, OnnxSegmenter]:
    """A model at 64 px, one epoch: parity is about the runtime, not about quality."""
    settings = TINY | {"image_size": 64, "base_channels": 8, "depth": 3, "epochs": 1}
    return _trained_and_exported(synth_dir / "data", synth_dir / "at64", settings)


def _threshold_at_median(segmenter: Segmenter, onnx: OnnxSegmenter, images: list[Image.Image]) -> float:
    # A model trained for an epoch or two is nearly constant, so at 0.5 its masks are all
    # foreground or all background and agree trivially; the median puts edges everywhere.
    batch = np.stack([image_to_array(img, segmenter.spec.image_size) for img in images])
    threshold = float(np.median(segmenter.probabilities(batch).numpy()))
    segmenter.spec = onnx.spec = replace(segmenter.spec, threshold=threshold)
    return threshold


def _compare(torch_probs: np.ndarray, onnx_probs: np.ndarray, threshold: float) -> tuple[float, float]:
    assert onnx_probs.shape == torch_probs.shape
    diff = float(np.abs(onnx_probs - torch_probs).max())
    agreement = float(((onnx_probs > threshold) == (torch_probs > threshold)).mean())
    return diff, agreement


def _batches(segmenter: Segmenter, onnx: OnnxSegmenter, images: list[Image.Image]) -> None:
    size = segmenter.spec.image_size
    batch = np.stack([image_to_array(img, size) for img in images])
    _threshold_at_median(segmenter, onnx, images)
    for n in (1, 3, len(images)):  # the batch axis is dynamic
        ref = segmenter.probabilities(batch[:n]).numpy()
        diff, agreement = _compare(ref, onnx.probabilities(batch[:n]), segmenter.spec.threshold)
        assert diff <= MAX_PROB_DIFF, f"batch {n}: max |p_onnx - p_torch| = {diff:.2e}"
        assert agreement >= MIN_AGREEMENT, f"batch {n}: masks agree on {agreement:.5%} of pixels"


def test_onnx_matches_torch_on_synthetic_images(
    tiny: tuple[Segmenter, OnnxSegmenter], synth_dir: Path
) -> None:
    segmenter, onnx = tiny
    images = [open_image(p.image) for p in find_pairs(synth_dir / "data").pairs[:8]]
    _batches(segmenter, onnx, images)


def test_onnx_file_declares_names_and_a_dynamic_batch(tiny: tuple[Segmenter, OnnxSegmenter]) -> None:
    _, onnx = tiny
    (inp,), (out,) = onnx.session.get_inputs(), onnx.session.get_outputs()
    assert inp.name == "image" and inp.type == "tensor(float)"
    assert out.name == "logits"
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, 32, 32]
    assert out.shape[1:] == [1, 32, 32]


def test_masks_match_torch_at_photo_sizes(at_64: tuple[Segmenter, OnnxSegmenter], synth_dir: Path) -> None:
    segmenter, onnx = at_64
    pairs = find_pairs(synth_dir / "data").pairs
    # Enlarged to photo sizes, plus one smaller than the model input (the masks shrink then).
    sizes = [(1024, 768), (768, 1024), (1000, 750), (50, 30)]
    images = [
        open_image(p.image).resize(s, Image.Resampling.BICUBIC) for p, s in zip(pairs[:4], sizes, strict=True)
    ]
    _threshold_at_median(segmenter, onnx, images)
    for img, ref, got in zip(
        images, segmenter.predict_masks(images), onnx.predict_masks(images), strict=True
    ):
        assert got.shape == ref.shape == (img.height, img.width)
        assert got.dtype == np.bool_
        assert 0 < ref.mean() < 1, "the test needs masks with edges"
        agreement = (got == ref).mean()
        assert agreement >= MIN_AGREEMENT, f"{img.size}: masks agree on {agreement:.5%} of pixels"
    assert onnx.predict_masks([]) == []


def test_probability_maps_are_what_the_masks_threshold(
    tiny: tuple[Segmenter, OnnxSegmenter], synth_dir: Path
) -> None:
    segmenter, onnx = tiny
    pairs = find_pairs(synth_dir / "data").pairs
    images = [open_image(p.image).resize(s) for p, s in zip(pairs[:2], [(100, 70), (20, 30)], strict=True)]
    threshold = _threshold_at_median(segmenter, onnx, images)
    for model in (segmenter, onnx):
        masks = model.predict_masks(images)
        for img, prob, mask in zip(images, model.probability_maps(images), masks, strict=True):
            assert prob.dtype == np.float32 and prob.shape == (img.height, img.width)
            assert np.array_equal(prob > threshold, mask)
        assert model.probability_maps([]) == []
    # The ONNX masks are, bit for bit, the ones predict_masks gave before probability_maps existed.
    batch = np.stack([image_to_array(img, onnx.spec.image_size) for img in images])
    before = [
        resize_bilinear(p[0], img.height, img.width) > threshold
        for p, img in zip(onnx.probabilities(batch), images, strict=True)
    ]
    assert all(np.array_equal(a, b) for a, b in zip(before, onnx.predict_masks(images), strict=True))


@pytest.mark.parametrize(
    ("src", "dst"), [((64, 64), (768, 1024)), ((64, 64), (30, 50)), ((512, 512), (37, 900))]
)
def test_resize_matches_torch_bilinear(src: tuple[int, int], dst: tuple[int, int]) -> None:
    prob = torch.sigmoid(3 * torch.randn(1, 1, *src, generator=torch.Generator().manual_seed(0)))
    ref = F.interpolate(prob, size=dst, mode="bilinear", align_corners=False)[0, 0].numpy()
    got = resize_bilinear(prob[0, 0].numpy(), *dst)
    assert got.shape == dst
    assert np.abs(got - ref).max() < 5e-5  # float32 rounding of source coordinates


def test_loading_a_folder_without_an_export_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="export_onnx"):
        OnnxSegmenter.load(tmp_path)


@pytest.mark.realdata
def test_onnx_matches_torch_on_real_photos(at_64: tuple[Segmenter, OnnxSegmenter]) -> None:
    if not (REAL_DATA / "images").is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    paths = sorted(p for p in (REAL_DATA / "images").iterdir() if not p.name.startswith("."))[:8]
    images = [open_image(p) for p in paths]
    segmenter, onnx = at_64
    _batches(segmenter, onnx, images)
    for img, ref, got in zip(
        images, segmenter.predict_masks(images), onnx.predict_masks(images), strict=True
    ):
        assert got.shape == ref.shape == (img.height, img.width)
        assert 0 < ref.mean() < 1, "the test needs masks with edges"
        assert (got == ref).mean() >= MIN_AGREEMENT
