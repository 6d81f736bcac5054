"""benchmarks/active_learning_table.py: the pooled comparison counts each seed of a recipe once."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def tables() -> ModuleType:
    return load_benchmark("active_learning_table")


def _result(
    when: str,
    settings: dict[str, Any],
    gains: list[tuple[float, float]],
    quick: bool = False,
    start_from: str = "random",
) -> str:
    rows = [{"seed": s, "random_gain": r, "power_gain": p} for s, (r, p) in enumerate(gains)]
    photos = {"start": 236, "start_from": start_from}
    return json.dumps({"when": when, "quick": quick, "settings": settings, "photos": photos, "runs": rows})


def test_a_seed_counts_once_per_recipe_and_the_newest_run_wins(tables: ModuleType, tmp_path: Path) -> None:
    small = dict(tables.SETTINGS)
    longer = small | {"epochs": 60}
    (tmp_path / "active-learning.json").write_text(_result("2026-01-01", small, [(0.02, 0.05)] * 3))
    (tmp_path / "active-learning-more.json").write_text(_result("2026-01-02", small, [(0.02, 0.01)] * 5))
    (tmp_path / "active-learning-60.json").write_text(_result("2026-01-03", longer, [(0.03, 0.02)] * 2))
    (tmp_path / "active-learning-quick.json").write_text(_result("2026-01-04", small, [(0.5, 0.9)], True))

    found = tables.runs(tmp_path)
    assert [name for name, _ in found] == [
        "active-learning.json",
        "active-learning-more.json",
        "active-learning-60.json",
    ]
    table = "\n".join(tables.table(found))
    assert "| active-learning-60.json | epochs=60 | 2 | +0.0300 | power +0.0200 (0.67x) |" in table
    assert "| active-learning.json | none | 3 |" in table

    (power,) = [line for line in tables.pooled(found) if line.startswith("| power")]
    # 5 seeds of the small recipe (the newer file's, the older one's 3 are the same seeds) + 2.
    assert power == "| power | 2 | 7 | +0.0129 | +0.0229 | -0.0100 ± 0.0000 | -0.0100 | 0 of 7 |"


def test_the_median_difference_stands_beside_a_mean_one_collapse_pulls_down(
    tables: ModuleType, tmp_path: Path
) -> None:
    gains = [(0.02, 0.03), (0.02, 0.01), (0.02, 0.025), (0.02, -0.08)]  # (random, power) per seed
    (tmp_path / "active-learning.json").write_text(_result("2026-01-01", dict(tables.SETTINGS), gains))
    (power,) = [line for line in tables.pooled(tables.runs(tmp_path)) if line.startswith("| power")]
    # Differences +0.010, -0.010, +0.005, -0.100: mean -0.02375 (s.e. 0.0258), median -0.0025.
    assert "| -0.0238 ± 0.0258 | -0.0025 | 2 of 4 |" in power


def test_runs_from_a_shifted_pool_are_listed_and_pooled_apart(tables: ModuleType, tmp_path: Path) -> None:
    small = dict(tables.SETTINGS)
    (tmp_path / "active-learning.json").write_text(_result("2026-01-01", small, [(0.02, 0.01)] * 3))
    near = _result("2026-01-02", small, [(0.02, 0.05)] * 3, start_from="near")
    (tmp_path / "active-learning-near.json").write_text(near)

    found = tables.runs(tmp_path)
    assert "| active-learning-near.json | --start near | 3 | +0.0200 | power +0.0500 (2.50x) |" in "\n".join(
        tables.table(found)
    )
    groups = tables.by_start(found)
    assert list(groups) == ["random", "near"]
    # The same seeds of the same recipe, yet neither file's pairs replace the other's.
    (iid,) = [line for line in tables.pooled(groups["random"]) if line.startswith("| power")]
    (shifted,) = [line for line in tables.pooled(groups["near"]) if line.startswith("| power")]
    assert "| -0.0100 ± 0.0000 |" in iid and "| +0.0300 ± 0.0000 |" in shifted
