"""Synthetic water-meter pairs: deterministic, binary masks, sane foreground."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wms.data import synthesize
from wms.errors import UsageError


def _bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    ids_a = synthesize(tmp_path / "a", 3, size=48, seed=7)
    ids_b = synthesize(tmp_path / "b", 3, size=48, seed=7)
    assert ids_a == ids_b == ["synth_s7_00000", "synth_s7_00001", "synth_s7_00002"]
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")


def test_different_seeds_differ(tmp_path: Path) -> None:
    synthesize(tmp_path / "a", 2, size=48, seed=1)
    synthesize(tmp_path / "b", 2, size=48, seed=2)
    a = np.asarray(Image.open(tmp_path / "a/images/synth_s1_00000.png"))
    b = np.asarray(Image.open(tmp_path / "b/images/synth_s2_00000.png"))
    assert not np.array_equal(a, b)


def test_pair_does_not_depend_on_count(tmp_path: Path) -> None:
    synthesize(tmp_path / "three", 3, size=40, seed=3)
    synthesize(tmp_path / "five", 5, size=40, seed=3)
    for sub in ("images", "masks"):
        name = f"{sub}/synth_s3_00002.png"
        assert (tmp_path / "three" / name).read_bytes() == (tmp_path / "five" / name).read_bytes()


def test_images_rgb_masks_binary_and_foreground_sane(tmp_path: Path) -> None:
    ids = synthesize(tmp_path, 20, size=64, seed=0)
    fractions = []
    for pair_id in ids:
        image = Image.open(tmp_path / "images" / f"{pair_id}.png")
        mask = Image.open(tmp_path / "masks" / f"{pair_id}.png")
        assert image.mode == "RGB" and image.size == (64, 64)
        assert mask.mode == "L" and mask.size == (64, 64)
        values = np.asarray(mask)
        assert set(np.unique(values).tolist()) == {0, 255}
        fractions.append(float((values > 127).mean()))
    # The window covers roughly 0.4-10% of the picture (real data: 2.3% on average).
    assert min(fractions) > 0.001
    assert max(fractions) < 0.15
    assert 0.01 < float(np.mean(fractions)) < 0.06


def test_progress_called_once_per_pair(tmp_path: Path) -> None:
    calls: list[int] = []
    synthesize(tmp_path, 4, size=32, progress=lambda: calls.append(1))
    assert len(calls) == 4


@pytest.mark.parametrize(("count", "size"), [(0, 64), (-1, 64), (1, 15)])
def test_bad_arguments(tmp_path: Path, count: int, size: int) -> None:
    with pytest.raises(UsageError):
        synthesize(tmp_path, count, size=size)
