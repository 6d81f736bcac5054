"""What the store accepts from a manifest: plain file names, known id forms, known splits."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from wms.data.manifest import check_manifest, check_version_id, name_problem
from wms.errors import DataError

SHA = "ab" * 32
GOOD: dict[str, Any] = {
    "version": "0123456789ab",
    "parent": None,
    "created_at": "2026-01-01T00:00:00+00:00",
    "counts": {"pairs": 1, "train": 1, "val": 0, "test": 0},
    "pairs": {
        "meter_1": {
            "image": {"sha256": SHA, "name": "meter_1.jpg"},
            "mask": {"sha256": SHA, "name": "meter_1.png"},
            "split": "train",
            "size": [64, 64],
        }
    },
}


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        (".", "folder reference"),
        ("..", "folder reference"),
        ("../x.png", "path separator"),
        ("/tmp/evil.png", "path separator"),
        ("a\\b.png", "path separator"),
        ("C:evil.png", "absolute"),
        ("a\x00b.png", "control character"),
        ("a\nb.png", "control character"),
        (".hidden.png", "hidden"),
        (None, "not text"),
    ],
)
def test_names_that_are_not_plain_file_names_are_named_as_such(name: Any, why: str) -> None:
    problem = name_problem(name)
    assert problem is not None and why in problem


def test_a_plain_name_passes() -> None:
    assert name_problem("meter 1 (copy).jpg") is None
    assert check_manifest(copy.deepcopy(GOOD), "0123456789ab", "store") == GOOD


@pytest.mark.parametrize("bad", ["../../etc", "0123456789AB", "0123456789a", "0123456789abc", "", None, 7])
def test_version_ids_other_than_the_store_makes_are_refused(bad: Any) -> None:
    with pytest.raises(DataError, match="12 lowercase hex characters"):
        check_version_id(bad)


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("version",), "fedcba987654", "names itself 'fedcba987654'"),
        (("parent",), "../x", "parent '../x' is not a version id"),
        (("pairs", "meter_1", "image", "name"), "../../x.jpg", "not a plain file name"),
        (("pairs", "meter_1", "mask", "name"), "other.png", "stem is not the pair id"),
        (("pairs", "meter_1", "image", "sha256"), SHA.upper(), "not 64 lowercase hex"),
        (("pairs", "meter_1", "split"), "holdout", "one of train, val, test"),
        (("counts",), None, "no pair count"),
    ],
)
def test_a_manifest_is_refused_with_its_problem(path: tuple[str, ...], value: Any, problem: str) -> None:
    manifest = copy.deepcopy(GOOD)
    target = manifest
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(DataError, match=problem) as caught:
        check_manifest(manifest, "0123456789ab", "s3://bucket/store")
    assert "0123456789ab" in str(caught.value) and "s3://bucket/store" in str(caught.value)
