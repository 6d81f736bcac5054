"""A model with a second stage (spec.refine): saved, exported and served as one model."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from wms.data.pairs import Pair, find_pairs
from wms.errors import RegistryError
from wms.parity import check_onnx_parity
from wms.serve.model import load_folder
from wms.train.export import OnnxSegmenter, export_onnx
from wms.train.model import build_model
from wms.train.preprocess import open_image
from wms.train.segmenter import Segmenter
from wms.train.spec import ONNX_FILE, REFINE_ONNX_FILE, REFINE_WEIGHTS_FILE, SPEC_FILE, ModelSpec, RefineSpec

REFINE = RefineSpec(size=32, kwargs={"base_channels": 4, "depth": 1}, margin=1.4, align=True)


def with_second_stage(first: Segmenter, seed: int) -> Segmenter:
    """`first` with an untrained second stage of depth 1 (stage 1's is 2)."""
    import torch

    torch.manual_seed(seed)
    refiner = build_model(first.spec.architecture, **REFINE.kwargs)
    return Segmenter(first.network, replace(first.spec, refine=REFINE), refiner=refiner)


@pytest.fixture(scope="module")
def two_stage(exported_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained synthetic model with a second stage, saved and exported."""
    folder = tmp_path_factory.mktemp("two-stage") / "model"
    segmenter = with_second_stage(Segmenter.load(exported_model), seed=3)
    segmenter.save(folder)
    export_onnx(segmenter, folder / ONNX_FILE)
    return folder


@pytest.fixture(scope="module")
def pairs(exported_model: Path) -> list[Pair]:
    return find_pairs(exported_model.parent / "data").pairs[18:]


def test_the_second_stage_is_saved_and_loaded_with_its_own_depth(two_stage: Path) -> None:
    assert (two_stage / REFINE_WEIGHTS_FILE).is_file() and (two_stage / REFINE_ONNX_FILE).is_file()
    spec = ModelSpec.read(two_stage / SPEC_FILE)
    assert spec.refine == REFINE
    loaded = Segmenter.load(two_stage)
    assert loaded.refiner is not None and len(loaded.refiner.down) == 2  # depth 1: two levels


def test_the_second_stage_answers_where_stage_1_found_something(
    two_stage: Path, exported_model: Path, pairs: list[Pair]
) -> None:
    images = [open_image(p.image) for p in pairs]
    first = Segmenter.load(exported_model).probability_maps(images)
    second = Segmenter.load(two_stage).probability_maps(images)
    changed = [not np.array_equal(a, b) for a, b in zip(first, second, strict=True)]
    assert sum(changed) >= len(images) // 2  # stage 2 ran on most photos, not a pass-through


def test_torch_and_onnx_runtime_give_the_same_two_stage_answer(two_stage: Path, pairs: list[Pair]) -> None:
    images = [open_image(p.image) for p in pairs]
    torch_maps = Segmenter.load(two_stage).probability_maps(images)
    onnx_maps = OnnxSegmenter.load(two_stage, threads=1).probability_maps(images)
    for a, b in zip(torch_maps, onnx_maps, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert check_onnx_parity(two_stage, pairs, 0.999).agreement >= 0.999


def test_a_swapped_or_missing_second_stage_is_refused(two_stage: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    segmenter = with_second_stage(Segmenter.load(two_stage), seed=4)
    segmenter.save(other)
    export_onnx(segmenter, other / ONNX_FILE)
    swapped = tmp_path / "swapped"
    shutil.copytree(two_stage, swapped)
    shutil.copyfile(other / REFINE_ONNX_FILE, swapped / REFINE_ONNX_FILE)
    with pytest.raises(RegistryError, match=f"{REFINE_ONNX_FILE} is not the one {ONNX_FILE} records"):
        OnnxSegmenter.load(swapped)
    with pytest.raises(RegistryError, match=f"{REFINE_ONNX_FILE} is not the one"):
        load_folder(swapped)  # what `wms serve` runs
    (swapped / REFINE_ONNX_FILE).unlink()
    with pytest.raises(RegistryError, match=f"{REFINE_ONNX_FILE} is missing"):
        OnnxSegmenter.load(swapped)
    (swapped / REFINE_WEIGHTS_FILE).unlink()
    with pytest.raises(RegistryError, match=f"no {REFINE_WEIGHTS_FILE}"):
        Segmenter.load(swapped)


def test_a_model_json_from_before_the_second_stage_loads_as_one_stage(
    exported_model: Path, tmp_path: Path
) -> None:
    spec = json.loads((exported_model / SPEC_FILE).read_text())
    spec.pop("refine", None)
    (tmp_path / SPEC_FILE).write_text(json.dumps(spec))
    assert ModelSpec.read(tmp_path / SPEC_FILE).refine is None
