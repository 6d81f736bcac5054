from __future__ import annotations

import pytest

from wms.config import GateSettings
from wms.errors import GateError
from wms.gate import decide
from wms.train.evaluate import ImageScore


def scores(values: list[float]) -> list[ImageScore]:
    return [ImageScore(f"id{i}", v, v * 0.8) for i, v in enumerate(values)]


def test_first_model_must_reach_the_floor() -> None:
    assert decide(GateSettings(floor=0.5), scores([0.6, 0.7]), None).promote
    rejected = decide(GateSettings(floor=0.8), scores([0.6, 0.7]), None)
    assert not rejected.promote
    assert "below the floor" in rejected.reason


def test_better_on_every_metric_is_promoted() -> None:
    decision = decide(GateSettings(), scores([0.8, 0.9]), scores([0.7, 0.8]), "1")
    assert decision.promote
    assert [c.metric for c in decision.comparisons] == ["dice", "iou"]
    assert decision.comparisons[0].delta == pytest.approx(0.1)


def test_identical_model_is_not_promoted() -> None:
    decision = decide(GateSettings(), scores([0.8, 0.9]), scores([0.8, 0.9]), "1")
    assert not decision.promote
    assert "dice did not improve" in decision.reason


def test_min_delta_must_be_exceeded() -> None:
    assert not decide(GateSettings(min_delta=0.2), scores([0.8, 0.9]), scores([0.7, 0.8]), "1").promote


def test_worse_model_is_rejected_and_the_table_shows_it() -> None:
    decision = decide(GateSettings(), scores([0.5, 0.6]), scores([0.7, 0.8]), "1")
    assert not decision.promote
    table = decision.to_markdown()
    assert "| dice | 0.5500 | 0.7500 | -0.2000 | fail |" in table
    assert "keep production" in table


def test_scores_on_different_images_are_refused() -> None:
    other = [ImageScore("zzz", 0.9, 0.9), ImageScore("yyy", 0.9, 0.9)]
    with pytest.raises(GateError):
        decide(GateSettings(), scores([0.8, 0.9]), other, "1")


def test_no_test_images_is_an_error() -> None:
    with pytest.raises(GateError, match="empty"):
        decide(GateSettings(), [], None)
