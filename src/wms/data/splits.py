"""Stable train/val/test splits: a pair's split is a function of its id alone.

Adding data never moves an existing pair to another split, so a test image can never
leak into training after a merge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Literal

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


def split_of(pair_id: str, val_fraction: float, test_fraction: float) -> Split:
    """The split of one pair, from a hash of its id."""
    digest = hashlib.sha256(pair_id.encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def assign_splits(ids: Iterable[str], val_fraction: float, test_fraction: float) -> dict[Split, list[str]]:
    """Group ids by split, each list sorted."""
    groups: dict[Split, list[str]] = {s: [] for s in SPLITS}
    for pair_id in sorted(ids):
        groups[split_of(pair_id, val_fraction, test_fraction)].append(pair_id)
    return groups
