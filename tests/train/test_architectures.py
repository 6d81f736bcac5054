"""Every registered architecture trains, saves, reloads and exports to a faithful ONNX file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wms.config import TrainSettings
from wms.data.pairs import Pair, find_pairs
from wms.data.synth import synthesize
from wms.errors import ConfigError
from wms.parity import check_onnx_parity
from wms.train.export import export_onnx
from wms.train.loop import train
from wms.train.model import ARCHITECTURES
from wms.train.preprocess import image_to_array, open_image
from wms.train.segmenter import ONNX_FILE, SPEC_FILE, Segmenter

SMALL = {"image_size": 64, "base_channels": 4, "depth": 2, "batch_size": 4, "epochs": 1, "device": "cpu"}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> list[Pair]:
    root = tmp_path_factory.mktemp("architectures")
    synthesize(root / "data", count=6, size=64, seed=5)
    return find_pairs(root / "data").pairs


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_architecture_trains_saves_and_exports_faithfully(
    name: str, pairs: list[Pair], tmp_path: Path
) -> None:
    result = train(TrainSettings(**SMALL | {"architecture": name}), pairs[:4], pairs[4:])
    assert len(result.history) == 1  # one epoch of one optimizer step
    folder = tmp_path / "model"
    result.segmenter.save(folder)
    # A model trained for one step is nearly constant; a threshold at its median puts mask
    # edges everywhere, so parity is tested where it can fail.
    batch = np.stack([image_to_array(open_image(p.image), 64) for p in pairs])
    probs = result.segmenter.probabilities(batch).numpy()
    spec = json.loads((folder / SPEC_FILE).read_text())
    (folder / SPEC_FILE).write_text(json.dumps({**spec, "threshold": float(np.median(probs))}))

    loaded = Segmenter.load(folder)
    assert loaded.spec.architecture == name
    assert np.array_equal(loaded.probabilities(batch).numpy(), probs)
    export_onnx(loaded, folder / ONNX_FILE)
    assert check_onnx_parity(folder, pairs, 0.999).agreement >= 0.999


@pytest.mark.parametrize("name", [n for n in ARCHITECTURES if n != "unet"])
def test_encoder_nets_need_a_multiple_of_32(name: str, pairs: list[Pair]) -> None:
    with pytest.raises(
        ConfigError, match=rf"image_size=48 must be divisible by 32 \(train.architecture='{name}'\)"
    ):
        train(TrainSettings(**SMALL | {"architecture": name, "image_size": 48}), pairs[:4], pairs[4:])


def test_imagenet_weights_without_an_encoder_is_one_clear_line(pairs: list[Pair]) -> None:
    with pytest.raises(ConfigError) as info:
        train(TrainSettings(**SMALL | {"encoder_weights": "imagenet"}), pairs[:4], pairs[4:])
    message = str(info.value)
    assert "\n" not in message
    assert (
        "'unet' has none" in message and "unet-resnet18" in message and 'encoder_weights = "none"' in message
    )


def test_an_unknown_architecture_lists_the_valid_names(pairs: list[Pair]) -> None:
    settings = TrainSettings(**SMALL | {"architecture": "unet-vgg16", "encoder_weights": "imagenet"})
    with pytest.raises(ConfigError) as info:
        train(settings, pairs[:4], pairs[4:])
    assert "\n" not in str(info.value)
    assert all(name in str(info.value) for name in ARCHITECTURES)
