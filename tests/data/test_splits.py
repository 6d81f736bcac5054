from __future__ import annotations

from wms.data.splits import assign_splits, split_of


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
