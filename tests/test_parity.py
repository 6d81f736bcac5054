"""The ONNX export against its torch weights: faithful, perturbed, and not a model at all."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from wms.data.pairs import Pair, find_pairs
from wms.data.synth import synthesize
from wms.errors import GateError
from wms.parity import check_onnx_parity, onnx_parity
from wms.train.segmenter import ONNX_FILE, Segmenter


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> list[Pair]:
    root = tmp_path_factory.mktemp("parity")
    synthesize(root / "data", count=6, size=64, seed=3)
    return find_pairs(root / "data").pairs


def test_a_faithful_export_agrees_on_nearly_every_pixel(exported_model: Path, pairs: list[Pair]) -> None:
    parity = check_onnx_parity(exported_model, pairs, 0.999)
    assert parity.pixels == 6 * 64 * 64
    assert parity.agreement >= 0.999


def test_an_export_that_disagrees_is_refused_with_the_agreement(
    exported_model: Path,
    perturbed_export: Callable[[Segmenter, Path], None],
    pairs: list[Pair],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "perturbed"
    shutil.copytree(exported_model, folder)
    perturbed_export(Segmenter.load(folder), folder / ONNX_FILE)
    agreement = onnx_parity(folder, pairs).agreement
    assert agreement < 0.999
    with pytest.raises(GateError, match=rf"agree on {agreement:.4%} .* below the 99.9% required"):
        check_onnx_parity(folder, pairs, 0.999)


def test_a_file_that_is_no_model_is_refused(exported_model: Path, pairs: list[Pair], tmp_path: Path) -> None:
    folder = tmp_path / "garbage"
    shutil.copytree(exported_model, folder)
    (folder / ONNX_FILE).write_bytes(b"not an onnx model")
    with pytest.raises(GateError, match="cannot be loaded or run"):
        check_onnx_parity(folder, pairs, 0.999)
    (folder / ONNX_FILE).unlink()
    with pytest.raises(GateError, match=r"set train\.export_onnx = true"):
        check_onnx_parity(folder, pairs, 0.999)
