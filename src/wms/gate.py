"""The quality gate: the candidate against the production model, on the same test images.

Both models are scored per image in one process, and the decision is made from the
paired per-image differences: their mean and a seeded bootstrap confidence interval.
The rules come from `[gate]`:

- every metric in `gate.metrics` must improve by more than `gate.min_delta` (mean Δ);
- with `gate.require_significant`, the lower bound of its interval must also be above 0;
- no metric in `gate.max_regression` may fall by more than its allowance;
- with nothing in production, the candidate's mean Dice must reach `gate.floor`;
- with fewer than `gate.min_images` test images no candidate passes, first model included;
- when the production model cannot be loaded or run, `gate.on_baseline_error` decides:
  `fail` (the default) keeps production, `floor` judges the candidate by the floor alone.

The report goes out as JSON (machines, the PR), Markdown (people) and a plot.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wms.config import GateSettings
from wms.errors import GateError
from wms.scores import ImageScore

METRICS = ("dice", "iou")
REPORT_JSON, REPORT_MD, REPORT_PLOT = "gate.json", "gate.md", "gate_dice.png"


@dataclass
class MetricComparison:
    """One metric, candidate vs baseline, over the same images."""

    metric: str
    candidate: float
    baseline: float | None = None
    delta: float | None = None  # mean of the paired differences, candidate - baseline
    ci_low: float | None = None  # the bootstrap interval of the trimmed mean Δ (gate.trim)
    ci_high: float | None = None
    trimmed_delta: float | None = None


@dataclass
class RuleVerdict:
    """One rule of `[gate]` applied to one metric."""

    rule: str  # floor | improve | significant | max_regression | baseline | min_images
    metric: str | None
    passed: bool
    detail: str


@dataclass
class GateDecision:
    """What the gate decided, why, and the numbers behind it."""

    promote: bool
    reason: str
    n_images: int
    baseline_version: str | None
    comparisons: list[MetricComparison] = field(default_factory=list)
    rules: list[RuleVerdict] = field(default_factory=list)
    confidence: float = 0.95
    resamples: int = 0
    seed: int = 0
    trim: float = 0.0
    baseline_error: str | None = None
    per_image: list[dict[str, Any]] = field(default_factory=list)

    def comparison(self, metric: str) -> MetricComparison:
        return next(c for c in self.comparisons if c.metric == metric)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for commit messages, tags and logs."""
        return ("promote: " if self.promote else "keep production: ") + self.reason

    def to_markdown(self) -> str:
        """The table a person reads in a report or a pull request."""
        pct = f"{self.confidence:.0%}"
        centre = _centre(self.trim)
        lines = [
            f"| metric | candidate | baseline | mean Δ | {centre} Δ | {pct} CI of that | n images |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in self.comparisons:
            base = "—" if c.baseline is None else f"{c.baseline:.4f}"
            delta = "—" if c.delta is None else f"{c.delta:+.4f}"
            trimmed = "—" if c.trimmed_delta is None else f"{c.trimmed_delta:+.4f}"
            ci = "—" if c.ci_low is None else f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
            lines.append(
                f"| {c.metric} | {c.candidate:.4f} | {base} | {delta} | {trimmed} | {ci} | {self.n_images} |"
            )
        lines += ["", "| rule | metric | verdict | detail |", "|---|---|---|---|"]
        for r in self.rules:
            lines.append(f"| {r.rule} | {r.metric or '—'} | {'pass' if r.passed else 'FAIL'} | {r.detail} |")
        against = f"production version {self.baseline_version}" if self.baseline_version else "no production"
        verdict = "**promote**" if self.promote else "**keep production**"
        lines += [
            "",
            f"{verdict}: {self.reason}",
            "",
            f"Candidate vs {against}, paired on the same {self.n_images} test images; "
            f"bootstrap of the {centre} difference with {self.resamples} resamples (seed {self.seed}).",
            "",
        ]
        return "\n".join(lines)


def trimmed_mean(values: np.ndarray, trim: float, axis: int = -1) -> np.ndarray:
    """Mean after cutting the `trim` share of values from each end (scipy's trim_mean)."""
    from scipy.stats import trim_mean

    return np.asarray(trim_mean(values, trim, axis=axis))


def bootstrap_ci(
    differences: np.ndarray, confidence: float, resamples: int, seed: int, trim: float = 0.0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the (trimmed) mean of paired differences (scipy, seeded)."""
    if len(differences) < 2 or np.ptp(differences) == 0:
        value = float(differences.mean())  # nothing varies: the interval is the point
        return value, value
    from scipy.stats import bootstrap

    def statistic(sample: np.ndarray, axis: int = -1) -> np.ndarray:
        return trimmed_mean(sample, trim, axis=axis)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on near-degenerate samples; the bounds stay valid
        result = bootstrap(
            (differences,),
            statistic,
            n_resamples=resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def decide(
    cfg: GateSettings,
    candidate: Sequence[ImageScore],
    baseline: Sequence[ImageScore] | None,
    baseline_version: str | None = None,
    baseline_error: str | None = None,
) -> GateDecision:
    """Decide from per-image scores.

    `baseline` is None when nothing is in production, or when the production model could
    not be evaluated (then `baseline_error` says why and `gate.on_baseline_error` applies).
    """
    if not candidate:
        raise GateError(
            "the test split is empty, so the gate has nothing to compare; add more labelled pairs"
        )
    cand = {m: np.array([getattr(s, m) for s in candidate], dtype=np.float64) for m in METRICS}
    common: dict[str, Any] = {
        "n_images": len(candidate),
        "baseline_version": baseline_version,
        "confidence": cfg.confidence,
        "resamples": cfg.bootstrap_resamples,
        "seed": cfg.seed,
        "trim": cfg.trim,
        "baseline_error": baseline_error,
    }
    if baseline_error is not None:
        if cfg.on_baseline_error == "fail":
            reason = (
                f"production version {baseline_version} could not be evaluated ({baseline_error}); "
                "the candidate is kept for review (gate.on_baseline_error=floor judges it by the floor)"
            )
            verdict = RuleVerdict("baseline", None, False, baseline_error)
            comparisons = [MetricComparison(m, float(cand[m].mean())) for m in METRICS]
            return GateDecision(False, reason, comparisons=comparisons, rules=[verdict], **common)
        return _floor_decision(cfg, cand, common, note=f"baseline failed ({baseline_error}); ")
    if baseline is None:
        return _floor_decision(cfg, cand, common, note="first model: ")

    if [s.id for s in baseline] != [s.id for s in candidate]:
        raise GateError(
            "candidate and baseline were scored on different images; this is a bug, please report it"
        )
    base = {m: np.array([getattr(s, m) for s in baseline], dtype=np.float64) for m in METRICS}
    comparisons = []
    for m in METRICS:
        diff = cand[m] - base[m]
        low, high = bootstrap_ci(diff, cfg.confidence, cfg.bootstrap_resamples, cfg.seed, cfg.trim)
        comparisons.append(
            MetricComparison(
                m,
                float(cand[m].mean()),
                float(base[m].mean()),
                float(np.mean(diff)),
                low,
                high,
                float(trimmed_mean(diff, cfg.trim)),
            )
        )
    by_metric = {c.metric: c for c in comparisons}
    rules = []
    if len(candidate) < cfg.min_images:
        detail = (
            f"only {len(candidate)} test image(s), fewer than gate.min_images = {cfg.min_images}: too few "
            "to tell the models apart; add labelled pairs"
        )
        rules.append(RuleVerdict("min_images", None, False, detail))
    for m in cfg.metrics:
        c = by_metric[m]
        assert c.delta is not None and c.ci_low is not None
        ok = c.delta > cfg.min_delta
        rules.append(
            RuleVerdict(
                "improve",
                m,
                ok,
                f"{m} {'improved' if ok else 'did not improve'} by more than {cfg.min_delta:g} "
                f"(mean Δ {c.delta:+.4f})",
            )
        )
        if cfg.require_significant:
            ok = c.ci_low > 0
            rules.append(
                RuleVerdict(
                    "significant",
                    m,
                    ok,
                    f"{m} {'is' if ok else 'is not'} significantly better "
                    f"({cfg.confidence:.0%} CI of the {_centre(cfg.trim)} Δ: lower bound {c.ci_low:+.4f} "
                    f"{'>' if ok else '≤'} 0)",
                )
            )
    for m, allowance in cfg.max_regression.items():
        c = by_metric[m]
        assert c.delta is not None
        ok = c.delta >= -allowance
        rules.append(
            RuleVerdict(
                "max_regression",
                m,
                ok,
                f"{m} fell {'within' if ok else 'by more than'} the allowed {allowance:g} "
                f"(mean Δ {c.delta:+.4f})",
            )
        )
    failed = [r for r in rules if not r.passed]
    if failed:
        reason = "; ".join(r.detail for r in failed)
    else:
        reason = "all rules pass: " + ", ".join(
            f"{c.metric} Δ {c.delta:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]" for c in comparisons
        )
    per_image = [
        {"id": s.id}
        | {f"candidate_{m}": float(cand[m][i]) for m in METRICS}
        | {f"baseline_{m}": float(base[m][i]) for m in METRICS}
        for i, s in enumerate(candidate)
    ]
    return GateDecision(
        not failed, reason, comparisons=comparisons, rules=rules, per_image=per_image, **common
    )


def _centre(trim: float) -> str:
    return f"{trim:.0%}-trimmed mean" if trim else "mean"


def _floor_decision(
    cfg: GateSettings, cand: dict[str, np.ndarray], common: dict[str, Any], note: str
) -> GateDecision:
    dice = float(cand["dice"].mean())
    passed = dice >= cfg.floor
    detail = f"mean Dice {dice:.4f} {'reaches' if passed else 'is below'} the floor {cfg.floor:.4f}"
    rules = [RuleVerdict("floor", "dice", passed, detail)]
    if len(cand["dice"]) < cfg.min_images:  # a mean over one or two photos says nothing of the model
        few = (
            f"only {len(cand['dice'])} test image(s), fewer than gate.min_images = {cfg.min_images}: too "
            "few to judge a model by; add labelled pairs"
        )
        rules.insert(0, RuleVerdict("min_images", None, False, few))
    failed = [r.detail for r in rules if not r.passed]
    comparisons = [MetricComparison(m, float(cand[m].mean())) for m in METRICS]
    return GateDecision(
        not failed,
        note + ("; ".join(failed) or detail),
        comparisons=comparisons,
        rules=rules,
        **common,
    )


def write_report(decision: GateDecision, out: Path) -> list[Path]:
    """gate.json, gate.md and (when there is a baseline) the per-image Dice plot, in `out`."""
    from wms.report import plot_paired_dice

    out.mkdir(parents=True, exist_ok=True)
    files = [out / REPORT_JSON, out / REPORT_MD]
    files[0].write_text(json.dumps(decision.to_dict(), indent=2) + "\n")
    files[1].write_text(decision.to_markdown())
    if decision.per_image:
        plot_paired_dice(decision.per_image, decision.baseline_version or "?", out / REPORT_PLOT)
        files.append(out / REPORT_PLOT)
    return files
