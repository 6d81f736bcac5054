"""Stable splits: a pair's split comes from its id once, then from the manifest for good."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from wms.config import load_settings
from wms.data.splits import SPLITS_FILE, assign_splits, read_splits, split_of, split_pairs, write_splits
from wms.data.store import open_store
from wms.errors import DataError


def test_split_depends_only_on_the_id() -> None:
    ids = [f"pair_{i}" for i in range(500)]
    first = assign_splits(ids, 0.15, 0.15)
    more = assign_splits([*ids, *(f"new_{i}" for i in range(500))], 0.15, 0.15)
    for split, members in first.items():
        assert set(members) <= set(more[split]), f"adding data moved pairs out of {split}"


def test_fractions_are_roughly_respected() -> None:
    groups = assign_splits([f"id_{i}" for i in range(4000)], 0.2, 0.1)
    assert abs(len(groups["test"]) / 4000 - 0.1) < 0.02
    assert abs(len(groups["val"]) / 4000 - 0.2) < 0.02


def test_split_of_is_a_pure_function() -> None:
    assert split_of("id_1000_value_176_881", 0.15, 0.15) == split_of("id_1000_value_176_881", 0.15, 0.15)


def test_changing_the_test_fraction_moves_no_stored_pair(
    project_dir: Path, make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    before = load_settings(start=project_dir, overrides={"data": {"test_fraction": 0.15}})
    v1 = open_store(before).ingest(make_batch("a", count=40, seed=1), None).version
    old = {pid: e["split"] for pid, e in open_store(before).manifest(v1)["pairs"].items()}
    after = load_settings(start=project_dir, overrides={"data": {"test_fraction": 0.3}})
    # The new fraction would move some of them if splits were recomputed from the hash.
    assert any(split_of(pid, 0.15, 0.3) != split for pid, split in old.items())

    store = open_store(after)
    v2 = store.ingest(make_batch("b", count=20, seed=2), v1).version
    stored = {pid: e["split"] for pid, e in store.manifest(v2)["pairs"].items()}
    assert {pid: stored[pid] for pid in old} == old
    assert all(stored[pid] == split_of(pid, 0.15, 0.3) for pid in set(stored) - set(old))

    pulled = tmp_path / "pulled"
    store.pull(v2, pulled)
    groups = {split: {p.id for p in pairs} for split, pairs in split_pairs(after, pulled).items()}
    assert {pid: split for split, ids in groups.items() for pid in ids} == stored
    old_test = {pid for pid, split in old.items() if split == "test"}
    assert old_test and old_test <= groups["test"] and not old_test & (groups["train"] | groups["val"])


def test_a_merged_folder_keeps_the_base_splits_and_hashes_the_new_pairs(
    project_dir: Path, make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    before = load_settings(start=project_dir, overrides={"data": {"test_fraction": 0.15}})
    v1 = open_store(before).ingest(make_batch("a", count=40, seed=1), None).version
    after = load_settings(start=project_dir, overrides={"data": {"test_fraction": 0.3}})
    # As the pipeline merges: the base version pulled, then the new pairs copied in beside it.
    work = tmp_path / "work"
    open_store(after).pull(v1, work)
    new = make_batch("b", count=20, seed=2)
    for kind in ("images", "masks"):
        for file in (new / kind).iterdir():
            shutil.copy2(file, work / kind / file.name)
    plan = open_store(after).plan(new, v1)
    groups = split_pairs(after, work)
    assert {p.id: split for split, pairs in groups.items() for p in pairs} == {
        pid: entry["split"] for pid, entry in plan.pairs.items()
    }
    # write_splits records the merged splits, so the folder says so itself.
    write_splits(work, plan.version, plan.pairs)
    assert read_splits(work) == {pid: entry["split"] for pid, entry in plan.pairs.items()}


def test_a_folder_without_splits_json_uses_the_hash_and_a_damaged_one_is_refused(
    project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    project = load_settings(start=project_dir)
    folder = make_batch("a", count=20)
    groups = split_pairs(project, folder)
    expected = assign_splits([p.id for pairs in groups.values() for p in pairs], 0.15, 0.15)
    assert {s: [p.id for p in pairs] for s, pairs in groups.items()} == expected
    (folder / SPLITS_FILE).write_text('{"version": "0123456789ab", "splits": {"x": "holdout"}}')
    with pytest.raises(DataError, match=r"splits\.json is damaged"):
        split_pairs(project, folder)
