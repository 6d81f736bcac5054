"""The quality gate: the candidate against the production model, on the same test images.

Both models are scored per image in one process; the decision uses the paired
differences. Every metric in `gate.metrics` must improve by more than `gate.min_delta`.
With no production model yet, the candidate's Dice must reach `gate.floor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from wms.config import GateSettings
from wms.errors import GateError
from wms.train.evaluate import ImageScore


@dataclass
class MetricComparison:
    """One metric, candidate vs baseline, over the same images."""

    metric: str
    candidate: float
    baseline: float | None
    delta: float | None
    passed: bool


@dataclass
class GateDecision:
    """What the gate decided and why."""

    promote: bool
    reason: str
    n_images: int
    baseline_version: str | None
    comparisons: list[MetricComparison] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        """A table a person reads in a report or PR."""
        rows = ["| metric | candidate | baseline | mean Δ | verdict |", "|---|---|---|---|---|"]
        for c in self.comparisons:
            base = "—" if c.baseline is None else f"{c.baseline:.4f}"
            delta = "—" if c.delta is None else f"{c.delta:+.4f}"
            rows.append(
                f"| {c.metric} | {c.candidate:.4f} | {base} | {delta} | {'pass' if c.passed else 'fail'} |"
            )
        verdict = "**promote**" if self.promote else "**keep production**"
        return "\n".join([*rows, "", f"{verdict}: {self.reason} (n={self.n_images} test images)", ""])


def decide(
    cfg: GateSettings,
    candidate: Sequence[ImageScore],
    baseline: Sequence[ImageScore] | None,
    baseline_version: str | None = None,
) -> GateDecision:
    """Decide from per-image scores; `baseline` is None when nothing is in production."""
    if not candidate:
        raise GateError(
            "the test split is empty, so the gate has nothing to compare; add more labelled pairs"
        )
    cand = {m: np.array([getattr(s, m) for s in candidate]) for m in cfg.metrics}
    n = len(candidate)
    if baseline is None:
        dice = float(np.mean([s.dice for s in candidate]))
        passed = dice >= cfg.floor
        comparison = MetricComparison("dice", dice, None, None, passed)
        verb = "reaches" if passed else "is below"
        reason = f"first model: Dice {dice:.4f} {verb} the floor {cfg.floor:.4f}"
        return GateDecision(passed, reason, n, None, [comparison])

    if [s.id for s in baseline] != [s.id for s in candidate]:
        raise GateError(
            "candidate and baseline were scored on different images; this is a bug, please report it"
        )
    comparisons = []
    for metric in cfg.metrics:
        base = np.array([getattr(s, metric) for s in baseline])
        delta = float(np.mean(cand[metric] - base))
        comparisons.append(
            MetricComparison(
                metric, float(cand[metric].mean()), float(base.mean()), delta, delta > cfg.min_delta
            )
        )
    failed = [c for c in comparisons if not c.passed]
    if failed:
        reason = "; ".join(
            f"{c.metric} did not improve by more than {cfg.min_delta:g} (Δ {c.delta:+.4f})" for c in failed
        )
    else:
        reason = "all of " + ", ".join(f"{c.metric} Δ {c.delta:+.4f}" for c in comparisons) + " improved"
    return GateDecision(not failed, reason, n, baseline_version, comparisons)
