from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from wms.data.store import LocalStore, read_pointer, write_pointer
from wms.errors import ConflictError, DataError


def test_merge_builds_a_version_with_base_and_new(tmp_path: Path, make_batch: Callable[..., Path]) -> None:
    store = LocalStore(tmp_path / "store")
    v1 = store.stage_merge(None, make_batch("a", count=5, seed=1))
    store.commit(v1)
    v2 = store.stage_merge(v1.version, make_batch("b", count=3, seed=2))
    folder = store.commit(v2)
    assert (v1.pairs, v2.pairs) == (5, 8)
    assert len(list((folder / "images").iterdir())) == 8
    assert store.manifest(v2.version)["parent"] == v1.version
    assert len(v2.added) == 3


def test_same_content_again_is_the_same_version(tmp_path: Path, make_batch: Callable[..., Path]) -> None:
    store = LocalStore(tmp_path / "store")
    batch = make_batch("a", count=4)
    first = store.stage_merge(None, batch)
    store.commit(first)
    again = store.stage_merge(first.version, batch)
    assert again.version == first.version
    assert again.added == [] and len(again.unchanged) == 4
    store.commit(again)
    assert [p.name for p in store.versions_dir.iterdir()] == [first.version]


def test_same_id_other_content_is_a_conflict_and_writes_nothing(
    tmp_path: Path, make_batch: Callable[..., Path]
) -> None:
    store = LocalStore(tmp_path / "store")
    base = store.stage_merge(None, make_batch("a", count=3, seed=1))
    store.commit(base)
    other = make_batch("b", count=3, seed=9)
    # Give seed-9 pairs the ids of the seed-1 pairs: same names, other pixels.
    for kind in ("images", "masks"):
        for p in sorted((other / kind).iterdir()):
            p.rename(p.with_name(p.name.replace("s9", "s1")))
    before = sorted(p.name for p in store.versions_dir.iterdir())
    with pytest.raises(ConflictError, match="3 id"):
        store.stage_merge(base.version, other)
    assert sorted(p.name for p in store.versions_dir.iterdir()) == before


def test_discarded_staging_leaves_no_version(tmp_path: Path, make_batch: Callable[..., Path]) -> None:
    store = LocalStore(tmp_path / "store")
    staged = store.stage_merge(None, make_batch("a", count=2))
    store.discard(staged)
    assert list(store.versions_dir.iterdir()) == []
    with pytest.raises(DataError, match="not in the store"):
        store.path(staged.version)


def test_missing_or_empty_new_data_is_a_clear_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(DataError, match="does not exist"):
        store.stage_merge(None, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images/ or masks/"):
        store.stage_merge(None, tmp_path / "empty")


def test_pointer_round_trip(tmp_path: Path, make_batch: Callable[..., Path]) -> None:
    store = LocalStore(tmp_path / "store")
    staged = store.stage_merge(None, make_batch("a", count=2))
    store.commit(staged)
    pointer = tmp_path / "data" / "dataset.json"
    assert read_pointer(pointer) is None
    write_pointer(pointer, store.manifest(staged.version))
    assert read_pointer(pointer) == {
        "version": staged.version,
        "parent": None,
        "pairs": 2,
        "created_at": store.manifest(staged.version)["created_at"],
    }
