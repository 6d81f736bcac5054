"""benchmarks/active_learning_experiment.py: a shifted pool's near shots, and its distant ones counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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
    # The lower third of the nine (sides 4, 5 and 6) are the distant shots; the cut lies between
    # sides 6 and 7 (the one-third quantile, 36 + 2/3 of the way to 49 pixels).
    near, cut = experiment.near_shots(pairs)
    assert near == {f"w{side}" for side in range(7, 13)}
    assert cut == pytest.approx((36 + 2 / 3 * 13) / 10_000)


def test_only_a_shifted_pool_counts_the_distant_shots_of_each_addition(tmp_path: Path) -> None:
    experiment = load_benchmark("active_learning_experiment")
    pool = [Pair(f"p{i}", tmp_path / f"p{i}.jpg", tmp_path / f"p{i}.png") for i in range(6)]
    distant = frozenset({"p0", "p1"})
    shifted = experiment.Experiment({}, [], pool, [], [], 3, tmp_path, tmp_path, "near", distant)
    arms = {"random": pool[1:4], "power": pool[:3]}
    assert shifted.distant_counts(arms) == {"random_distant": 1, "power_distant": 2}
    benchmark = experiment.Experiment({}, [], pool, [], [], 3, tmp_path, tmp_path)
    assert benchmark.distant_counts(arms) == {}
