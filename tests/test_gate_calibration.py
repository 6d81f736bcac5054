"""The gate's default rule on the measured spread of two equally good models' per-image scores.

benchmarks/results/gate-spread.json holds the per-image test Dice of two models trained on
the real photos that differ only by seed (benchmarks/gate_calibration.py measure). From it,
simulated comparisons check the defaults of `[gate]`: a candidate no better than production
is promoted at most 5% of the time, and a better one at least 80% of the time.

On the measured spread (132 test images, paired Δ sd 0.126, driven by a few photos one model
misses and the other finds) no interval of the plain mean reaches 80% at +0.02 with at most 5%
false promotions; the interval of the 20%-trimmed mean does (docs/gate.md, "The quality gate").
"""

from __future__ import annotations

from types import ModuleType

import pytest
from tests.conftest import load_benchmark

from wms.config import GateSettings


@pytest.fixture(scope="module")
def calibration() -> ModuleType:
    return load_benchmark("gate_calibration")


def test_default_rule_keeps_an_equal_model_out_and_lets_a_better_one_in(calibration: ModuleType) -> None:
    a, b = calibration.load_spread()
    assert len(a) == len(b) >= 100
    rates = calibration.rates(GateSettings(), a, b, trials=600, gain=calibration.BETTER_BY)
    assert calibration.BETTER_BY == 0.02
    assert rates["false_promotion"] <= calibration.MAX_FALSE_PROMOTION == 0.05
    assert rates["power"] >= calibration.MIN_POWER == 0.80


def test_the_simulated_rule_is_the_gate_s_rule(calibration: ModuleType) -> None:
    # The simulation applies the rule to thousands of comparisons at once; on a sample it must
    # give the verdicts of wms.gate.decide itself.
    a, b = calibration.load_spread()
    assert calibration.agreement_with_decide(GateSettings(), a, b, trials=15, seed=3) >= 0.9
