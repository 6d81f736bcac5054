"""benchmarks/active_learning_curve.py: reading off the curve how many random photos buy a gain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import load_benchmark


def test_the_photos_a_gain_costs_are_read_between_the_curve_s_points() -> None:
    curve = load_benchmark("active_learning_curve")
    added, gains = [44, 88, 176, 353], [0.01, 0.02, 0.03, 0.04]
    assert curve.photos_for(0.005, added, gains) == pytest.approx(22)  # from the start: 0 photos, 0 gain
    assert curve.photos_for(0.03, added, gains) == pytest.approx(176)
    assert curve.photos_for(0.025, added, gains) == pytest.approx(132)
    assert curve.photos_for(0.05, added, gains) is None  # beyond the whole pool
    # A dip (noise) is passed over: the first rise through the gain counts.
    assert curve.photos_for(0.025, added, [0.01, 0.03, 0.02, 0.04]) == pytest.approx(77)


def test_the_table_leaves_the_curve_out(tmp_path: Path) -> None:
    tables = load_benchmark("active_learning_table")
    curve = {"when": "2026-01-01", "quick": False, "settings": {}, "runs": [{"seed": 0, "gain_88": 0.02}]}
    (tmp_path / "active-learning-curve.json").write_text(json.dumps(curve))
    assert tables.runs(tmp_path) == []
