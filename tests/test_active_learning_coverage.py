"""benchmarks/active_learning_coverage.py: both selections fill what the labelled photos miss."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def cover() -> ModuleType:
    return load_benchmark("active_learning_coverage")


def _blob(rng: np.random.Generator, centre: tuple[float, float], n: int, spread: float = 0.1) -> np.ndarray:
    return np.asarray(centre) + spread * rng.standard_normal((n, 2))


def test_the_distances_match_a_direct_computation(cover: ModuleType) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((130, 5)), rng.standard_normal((7, 5))
    expected = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    assert np.allclose(cover.distances(a, b, rows=16), expected)


def test_coverage_takes_the_region_the_labelled_photos_miss_and_no_photo_twice(cover: ModuleType) -> None:
    rng = np.random.default_rng(1)
    labelled = _blob(rng, (0, 0), 30)
    # Half the pool lies among the labelled photos, half in a region none of them covers.
    pool = np.concatenate([_blob(rng, (0, 0), 40), _blob(rng, (5, 5), 40)])
    chosen = cover.coverage(labelled, pool, 3)
    assert len(set(chosen)) == 3
    assert all(i >= 40 for i in chosen)
    # Asked for more than the pool holds: every photo once.
    assert sorted(cover.coverage(labelled, pool[:5], 9)) == [0, 1, 2, 3, 4]


def test_typical_takes_the_centre_of_each_group_with_no_labelled_photo_first(
    cover: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cover, "CLUSTERS", 3)
    rng = np.random.default_rng(2)
    labelled = _blob(rng, (0, 0), 30)
    new_groups = [(6.0, 0.0), (0.0, 6.0)]
    pool = np.concatenate([_blob(rng, (0, 0), 20), *(_blob(rng, c, 20) for c in new_groups)])
    chosen = cover.typical(labelled, pool, 2, seed=0)
    assert len(set(chosen)) == 2
    for centre in new_groups:  # one photo from each unlabelled group, near its middle
        near = [i for i in chosen if np.linalg.norm(pool[i] - centre) < 1.0]
        assert len(near) == 1
        members = np.flatnonzero(np.linalg.norm(pool - centre, axis=1) < 1.0)
        spread = np.linalg.norm(pool[members] - pool[near[0]], axis=1).mean()
        assert spread <= np.median([np.linalg.norm(pool[members] - pool[m], axis=1).mean() for m in members])


def test_features_are_the_deepest_block_s_pooled_output_of_unit_length(
    cover: ModuleType, exported_model: Path, tmp_path: Path
) -> None:
    from wms.data.pairs import find_pairs
    from wms.data.synth import synthesize
    from wms.train.segmenter import Segmenter

    synthesize(tmp_path / "data", count=5, size=64, seed=3)
    pairs = find_pairs(tmp_path / "data").pairs
    model = Segmenter.load(exported_model)
    deepest = model.network.down[-1][-3].out_channels  # conv, norm, activation
    embedded = cover.features(model, [*pairs, pairs[0]], batch=2)
    assert embedded.shape == (6, 2 * deepest)  # mean and max of each channel
    assert np.allclose(np.linalg.norm(embedded, axis=1), 1)
    assert np.allclose(embedded[0], embedded[5])  # the same photo, in another batch
    assert not np.allclose(embedded[0], embedded[1])
    assert np.allclose(cover.features(model, pairs, batch=16), embedded[:5], atol=1e-6)
    assert not model.network.down[-1]._forward_hooks  # the hook is gone afterwards
