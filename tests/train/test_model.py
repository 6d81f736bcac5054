from __future__ import annotations

import pytest
import torch

from wms.errors import ConfigError
from wms.train.model import ARCHITECTURES, build_model, count_parameters


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_unet_keeps_the_spatial_size(depth: int) -> None:
    model = build_model("unet", base_channels=4, depth=depth)
    out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 1, 32, 32)


def test_width_changes_the_parameter_count() -> None:
    assert count_parameters(build_model("unet", base_channels=8)) > count_parameters(
        build_model("unet", base_channels=4)
    )


def test_unknown_architecture_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("resnet-9000")
    for name in ARCHITECTURES:
        assert name in str(info.value)
