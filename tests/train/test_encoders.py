"""The encoders keep torchvision's layout, so its ImageNet files load; and never need the network."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest
import torch

from wms.config import TrainSettings
from wms.data.pairs import Pair, find_pairs
from wms.data.synth import synthesize
from wms.errors import TrainError
from wms.train.encoders import CLASSIFIER_KEYS, ENCODERS, IMAGENET_URLS
from wms.train.loop import train
from wms.train.model import build_model, count_parameters, load_encoder_weights
from wms.train.segmenter import SPEC_FILE, Segmenter

# torchvision's published parameter counts (the weights' `num_params`) less the classifier's,
# and a few of its keys with their shapes.
TORCHVISION = {
    "mobilenet_v2": (
        3_504_872 - (1280 * 1000 + 1000),
        {"features.0.0.weight": (32, 3, 3, 3), "features.1.conv.1.weight": (16, 32, 1, 1)}
        | {"features.17.conv.2.weight": (320, 960, 1, 1), "features.18.1.running_var": (1280,)},
    ),
    "resnet18": (
        11_689_512 - (512 * 1000 + 1000),
        {"conv1.weight": (64, 3, 7, 7), "layer2.0.downsample.0.weight": (128, 64, 1, 1)}
        | {"layer4.1.bn2.running_mean": (512,)},
    ),
}


def _cache_file(torch_home: Path, encoder: str) -> Path:
    return torch_home / "hub" / "checkpoints" / IMAGENET_URLS[encoder].rsplit("/", 1)[-1]


def _place_weights(torch_home: Path, encoder: str) -> dict[str, torch.Tensor]:
    """A file with torchvision's keys (classifier included) and recognisable values, where torch.hub looks."""
    gen = torch.Generator().manual_seed(0)
    state = {
        k: torch.rand(v.shape, generator=gen) if v.is_floating_point() else v
        for k, v in ENCODERS[encoder]().state_dict().items()
    }
    classifier = {
        f"{CLASSIFIER_KEYS[encoder]}weight": torch.zeros(1000, 8),
        f"{CLASSIFIER_KEYS[encoder]}bias": torch.zeros(1000),
    }
    path = _cache_file(torch_home, encoder)
    path.parent.mkdir(parents=True)
    torch.save(state | classifier, path)
    return state


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_encoder_has_torchvisions_keys_and_shapes(encoder: str) -> None:
    parameters, keys = TORCHVISION[encoder]
    model = ENCODERS[encoder]()
    assert count_parameters(model) == parameters
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: shapes.get(k) for k in keys} == keys


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_imagenet_weights_come_from_the_hub_cache(
    encoder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    placed = _place_weights(tmp_path, encoder)
    model = build_model(f"unet-{encoder}")
    decoder_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    load_encoder_weights(model, "imagenet")
    loaded = model.state_dict()
    assert all(torch.equal(loaded[f"encoder.{k}"], v) for k, v in placed.items())
    assert all(torch.equal(loaded[k], v) for k, v in decoder_before.items())


def test_trained_model_reloads_without_the_imagenet_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synthesize(tmp_path / "data", count=4, size=64, seed=2)
    pairs: list[Pair] = find_pairs(tmp_path / "data").pairs
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    placed = _place_weights(tmp_path / "torch", "mobilenet_v2")
    settings = TrainSettings(
        architecture="unet-mobilenet_v2", encoder_weights="imagenet", image_size=64, epochs=0, device="cpu"
    )
    segmenter = train(settings, pairs[:2], pairs[2:]).segmenter
    assert torch.equal(
        segmenter.model.state_dict()["encoder.features.18.0.weight"], placed["features.18.0.weight"]
    )
    segmenter.save(tmp_path / "model")
    assert "encoder_weights" not in json.loads((tmp_path / "model" / SPEC_FILE).read_text())["kwargs"]

    _cache_file(tmp_path / "torch", "mobilenet_v2").unlink()

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading a saved model must not fetch ImageNet weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    reloaded = Segmenter.load(tmp_path / "model")
    assert torch.equal(
        reloaded.model.state_dict()["encoder.features.18.0.weight"], placed["features.18.0.weight"]
    )


def test_a_failed_download_says_where_to_put_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(TrainError) as info:
        load_encoder_weights(build_model("unet-resnet18"), "imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert IMAGENET_URLS["resnet18"] in message and str(_cache_file(tmp_path, "resnet18")) in message
    assert 'train.encoder_weights = "none"' in message


def test_a_file_of_other_weights_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = _cache_file(tmp_path, "resnet18")
    path.parent.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(TrainError, match="does not hold torchvision's resnet18 weights"):
        load_encoder_weights(build_model("unet-resnet18"), "imagenet")
