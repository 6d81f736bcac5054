from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from wms.config import TrainSettings
from wms.data.pairs import find_pairs
from wms.train.cache import cache_key, forget_erased, load_arrays
from wms.train.loop import train

TINY = {"image_size": 32, "base_channels": 4, "depth": 2, "batch_size": 8, "epochs": 0}


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


@pytest.fixture
def pairs(make_batch: Callable[..., Path]) -> list:
    return find_pairs(make_batch(count=40, size=32)).pairs


def test_a_year_of_batches_keeps_the_cache_within_its_size(pairs: list, tmp_path: Path) -> None:
    # Each batch is a new dataset version, so each run decodes new arrays: a run's train and val
    # arrays are about 80 KB here, and the cap holds about three runs' worth.
    cache = tmp_path / "cache"
    cap_gb = 250_000 / 1024**3
    cfg = TrainSettings(**TINY | {"cache_max_gb": cap_gb})
    for day in range(20):
        data = pairs[: 20 + day]
        train(cfg, data[:-4], data[-4:], cache_dir=cache)
    newest = cache_key(data[:-4], 32), cache_key(data[-4:], 32)
    assert {f"{k}.{kind}.npy" for k in newest for kind in ("images", "masks")} <= {
        p.name for p in cache.iterdir()
    }
    assert _size(cache) <= 250_000 + 120_000  # the cap, and the run just made may go past it
    assert len(list(cache.iterdir())) < 20 * 4


def test_arrays_used_again_stay_and_the_least_recent_go(pairs: list, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    old, other = pairs[:10], pairs[10:20]
    load_arrays(old, 32, cache)
    load_arrays(other, 32, cache)
    for i, path in enumerate(sorted(cache.iterdir())):
        os.utime(path, (1_000_000 + i, 1_000_000 + i))  # both written long ago
    load_arrays(old, 32, cache)  # used again: now the most recent
    entry = _size(cache) // 2
    load_arrays(pairs[20:30], 32, cache, max_bytes=2 * entry)
    left = {p.name.split(".")[0] for p in cache.iterdir()}
    assert left == {cache_key(old, 32), cache_key(pairs[20:30], 32)}


def test_a_full_disk_costs_the_cache_not_the_run(
    pairs: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"

    def disk_full(fd: int, offset: int, length: int) -> None:  # the arrays' room is not there
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", disk_full)
    images, masks = load_arrays(pairs[:10], 32, cache, max_bytes=10**9)
    assert images.shape == (10, 3, 32, 32) and masks.shape == (10, 32, 32)
    assert list(cache.iterdir()) == []  # no part of an array is left to fill the disk further


def test_a_partial_array_a_killed_run_left_is_removed(pairs: list, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    left = cache / ".0badf00d.tmp.npy"
    left.write_bytes(bytes(50_000))
    os.utime(left, (time.time() - 2 * 3600,) * 2)  # killed two hours ago, in the middle of its write
    writing = cache / ".0c0ffee0.tmp.npy"
    writing.write_bytes(bytes(1000))  # another run writing now
    load_arrays(pairs[:10], 32, cache, max_bytes=10**9)
    names = {p.name for p in cache.iterdir()}
    assert left.name not in names and writing.name in names


def test_a_photo_erased_from_the_store_empties_the_cache_once(pairs: list, tmp_path: Path) -> None:
    """The arrays are keyed by no pair: a photo `wms data forget` erased empties the cache of a
    machine that trained on it, once (the next run fills it again and keeps it)."""
    cache = tmp_path / "cache"
    load_arrays(pairs[:10], 32, cache)
    arrays = sorted(p.name for p in cache.glob("*.npy"))
    assert forget_erased(cache, []) == 0 and sorted(p.name for p in cache.glob("*.npy")) == arrays
    first, second = "a" * 64, "b" * 64
    assert forget_erased(cache, [first]) == 2 and not list(cache.glob("*.npy"))
    load_arrays(pairs[:10], 32, cache)
    assert forget_erased(cache, [first]) == 0 and len(list(cache.glob("*.npy"))) == 2  # seen: kept
    assert forget_erased(cache, [first, second]) == 2  # a new one
    load_arrays(pairs[:10], 32, cache)
    (cache / "erased.json").write_text("{damaged")
    assert forget_erased(cache, [first, second]) == 2  # what it saw is unknown: emptied again
    assert forget_erased(tmp_path / "never-made", [first]) == 0


def test_pairs_decoded_by_several_workers_are_the_arrays_one_process_decodes(pairs: list) -> None:
    images, masks = load_arrays(pairs, 32, workers=2)
    one_images, one_masks = load_arrays(pairs, 32, workers=1)
    assert np.array_equal(images, one_images) and np.array_equal(masks, one_masks)
    assert images.shape == (40, 3, 32, 32) and masks.any() and images.std() > 0


def test_a_set_is_decoded_into_its_cache_files_not_into_memory_first(
    pairs: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A year of pairs at 512 px outgrows the instance's memory (about 1 MB a pair): the arrays
    are written to the cache as they are decoded, and read back from there, the same pixels."""
    in_memory = load_arrays(pairs[:10], 32)
    made: list[tuple[int, ...]] = []
    empty = np.empty

    def tracked(shape: tuple[int, ...], *args: object, **kwargs: object) -> np.ndarray:
        made.append(tuple(np.atleast_1d(shape)))
        return empty(shape, *args, **kwargs)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(np, "empty", tracked)
    images, masks = load_arrays(pairs[:10], 32, tmp_path / "cache", max_bytes=10**9)
    assert (10, 3, 32, 32) not in made and (10, 32, 32) not in made  # never a whole array in memory
    assert isinstance(images, np.memmap) and isinstance(masks, np.memmap)
    assert np.array_equal(images, in_memory[0]) and np.array_equal(masks, in_memory[1])
    assert sorted(p.name.split(".", 1)[1] for p in (tmp_path / "cache").iterdir()) == [
        "images.npy",
        "masks.npy",
    ]
