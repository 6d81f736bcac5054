"""Stable train/val/test splits: a pair's split is a function of its id, recorded once.

A new pair's split comes from a hash of its id, so adding data never moves an existing pair.
Once a pair is in a dataset version its split is recorded in the manifest, and a pulled
folder carries those splits in `splits.json`; training reads them from there, so changing
`data.val_fraction` or `data.test_fraction` later never moves an old test image into training.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from wms.data.pairs import Pair, find_pairs
from wms.errors import DataError
from wms.files import write_text_atomic

if TYPE_CHECKING:
    from wms.config import Project

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
SPLITS_FILE = "splits.json"


def split_of(pair_id: str, val_fraction: float, test_fraction: float) -> Split:
    """The split of one pair, from a hash of its id."""
    digest = hashlib.sha256(pair_id.encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def assign_splits(
    ids: Iterable[str],
    val_fraction: float,
    test_fraction: float,
    recorded: Mapping[str, Split] | None = None,
) -> dict[Split, list[str]]:
    """Group ids by split, each list sorted: the recorded split where there is one, else the hash."""
    recorded = recorded or {}
    groups: dict[Split, list[str]] = {s: [] for s in SPLITS}
    for pair_id in sorted(ids):
        split = recorded.get(pair_id) or split_of(pair_id, val_fraction, test_fraction)
        groups[split].append(pair_id)
    return groups


def write_splits(folder: Path, version: str, pairs: Mapping[str, Mapping[str, Any]]) -> Path:
    """Record each pair's split from a manifest's `pairs` in `folder/splits.json`; returns the file."""
    body = {"version": version, "splits": {pid: pairs[pid]["split"] for pid in sorted(pairs)}}
    target = Path(folder) / SPLITS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, json.dumps(body, indent=1) + "\n")
    return target


def read_splits(folder: Path) -> dict[str, Split] | None:
    """The splits recorded in `folder/splits.json`, or None when the folder has none."""
    path = Path(folder) / SPLITS_FILE
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        body = None
    splits = body.get("splits") if isinstance(body, dict) else None
    if not isinstance(splits, dict) or any(s not in SPLITS for s in splits.values()):
        raise DataError(
            f"{path} is damaged (it must map pair ids to train, val or test); "
            "pull the dataset version again with `wms data pull VERSION DIR`"
        )
    return {str(pid): cast(Split, s) for pid, s in splits.items()}


def split_pairs(project: Project, dataset: Path) -> dict[Split, list[Pair]]:
    """The dataset's complete pairs grouped into the stable splits.

    A pair listed in the folder's `splits.json` (written by `wms data pull`) keeps the split
    its dataset version recorded; any other pair gets the hash split of the current fractions.
    """
    scan = find_pairs(dataset)
    if not scan.pairs:
        raise DataError(f"no complete image/mask pairs in {dataset}; see `wms data validate {dataset}`")
    by_id = {p.id: p for p in scan.pairs}
    cfg = project.settings.data
    groups = assign_splits(by_id, cfg.val_fraction, cfg.test_fraction, read_splits(dataset))
    return {split: [by_id[i] for i in ids] for split, ids in groups.items()}
