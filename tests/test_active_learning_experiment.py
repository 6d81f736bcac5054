"""benchmarks/active_learning_experiment.py: the shifted pool's start photos are the near shots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tests.conftest import load_benchmark

from wms.data.pairs import Pair


def test_near_shots_are_the_photos_with_the_larger_two_thirds_of_windows(tmp_path: Path) -> None:
    experiment = load_benchmark("active_learning_experiment")
    pairs = []
    for side in range(4, 13):  # windows of 16 to 144 pixels in a 100 x 100 mask
        mask = np.zeros((100, 100), np.uint8)
        mask[:side, :side] = 255
        path = tmp_path / f"w{side}.png"
        Image.fromarray(mask).save(path)
        pairs.append(Pair(f"w{side}", tmp_path / "unused.jpg", path))

    assert experiment.window_share(pairs[0]) == 0.0016
    # The lower third of the nine (sides 4, 5 and 6) are the distant shots.
    assert experiment.near_shots(pairs) == {f"w{side}" for side in range(7, 13)}
