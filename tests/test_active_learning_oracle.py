"""benchmarks/active_learning_oracle.py: choosing by the real error, and the score judged against it."""

from __future__ import annotations

import pytest
from tests.conftest import load_benchmark


def test_the_hardest_photos_are_those_with_the_largest_error_and_the_easiest_the_smallest() -> None:
    oracle = load_benchmark("active_learning_oracle")
    errors = {"a": 0.10, "b": 0.90, "c": 0.40, "d": 0.90, "e": 0.05}
    assert oracle.by_error(errors, 3) == ["b", "d", "c"]  # a tie goes to the smaller id
    assert oracle.by_error(errors, 2, hardest=False) == ["e", "a"]
    assert oracle.by_error(errors, 9) == ["b", "d", "c", "a", "e"]  # asking for more takes them all


def test_the_rank_correlation_sees_order_not_scale() -> None:
    oracle = load_benchmark("active_learning_oracle")
    errors = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert oracle.rank_correlation([1, 5, 9, 100, 101], errors) == pytest.approx(1.0)
    assert oracle.rank_correlation([5, 4, 3, 2, 1], errors) == pytest.approx(-1.0)
    assert oracle.rank_correlation([1, 1, 2, 2, 3], errors) == pytest.approx(0.9486833, abs=1e-6)
    # A score that is the same for every photo has no order to compare.
    assert oracle.rank_correlation([1, 1, 1, 1, 1], errors) is None
