from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from wms.config import GateSettings
from wms.errors import GateError
from wms.gate import bootstrap_ci, decide, write_report
from wms.scores import ImageScore


def scores(values: list[float] | np.ndarray) -> list[ImageScore]:
    return [ImageScore(f"id{i}", float(v), float(v) * 0.8) for i, v in enumerate(values)]


def noisy(n: int, mean: float, spread: float, seed: int) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(mean, spread, n), 0, 1)


def test_first_model_must_reach_the_floor() -> None:
    assert decide(GateSettings(floor=0.5), scores([0.6, 0.7, 0.6, 0.7, 0.6]), None).promote
    rejected = decide(GateSettings(floor=0.8), scores([0.6, 0.7, 0.6, 0.7, 0.6]), None)
    assert not rejected.promote
    assert "below the floor" in rejected.reason
    assert [(r.rule, r.passed) for r in rejected.rules] == [("floor", False)]


def test_a_first_model_judged_on_two_test_images_is_not_promoted() -> None:
    """A mean Dice over two photos says nothing of the model that would go to production."""
    two = decide(GateSettings(floor=0.5), scores([0.95, 0.90]), None)
    assert not two.promote
    assert two.reason == (
        "first model: only 2 test image(s), fewer than gate.min_images = 5: too few to judge a model by; "
        "add labelled pairs"
    )
    assert [(r.rule, r.passed) for r in two.rules] == [("min_images", False), ("floor", True)]
    # Judged by the floor because production could not be run: the same rule.
    cfg = GateSettings(floor=0.5, on_baseline_error="floor")
    broken = decide(cfg, scores([0.95, 0.90]), None, "1", baseline_error="no model.onnx")
    assert not broken.promote and "only 2 test image(s)" in broken.reason
    assert decide(GateSettings(floor=0.5, min_images=2), scores([0.95, 0.90]), None).promote


def test_better_on_every_metric_is_promoted_with_an_interval_around_the_gain() -> None:
    base = noisy(60, 0.7, 0.1, seed=1)
    decision = decide(GateSettings(), scores(np.clip(base + 0.05, 0, 1)), scores(base), "1")
    assert decision.promote, decision.reason
    dice = decision.comparison("dice")
    assert dice.delta == pytest.approx(0.05, abs=0.01)
    assert dice.ci_low is not None and dice.ci_high is not None
    assert dice.trimmed_delta is not None  # the interval is of the 20%-trimmed mean Δ
    assert dice.ci_low - 1e-12 <= dice.trimmed_delta <= dice.ci_high + 1e-12
    assert decision.resamples >= 2000


def test_too_few_test_images_never_beat_production() -> None:
    """With one test image the interval is a point: any gain would look significant."""
    one = decide(GateSettings(), scores([0.80]), scores([0.79]), "1")
    assert not one.promote
    assert "only 1 test image(s), fewer than gate.min_images = 5" in one.reason
    assert ("min_images", False) in [(r.rule, r.passed) for r in one.rules]
    base = np.array([0.60, 0.65, 0.70, 0.75, 0.80])
    assert decide(GateSettings(), scores(base + 0.1), scores(base), "1").promote  # five, all clearly better


def test_identical_model_is_not_promoted() -> None:
    values = noisy(40, 0.8, 0.1, seed=2)
    decision = decide(GateSettings(), scores(values), scores(values), "1")
    assert not decision.promote
    assert "dice did not improve" in decision.reason


@pytest.mark.parametrize("min_delta", [0.0, 0.001])
def test_identical_model_is_never_promoted_when_significance_is_required(min_delta: float) -> None:
    values = noisy(80, 0.8, 0.15, seed=3)
    cfg = GateSettings(require_significant=True, min_delta=min_delta)
    decision = decide(cfg, scores(values), scores(values), "1")
    assert not decision.promote
    assert decision.comparison("dice").ci_low == 0.0


def test_a_gain_inside_the_noise_passes_improve_but_fails_significance() -> None:
    base = noisy(30, 0.7, 0.1, seed=4)
    # Half the images better, half worse, a tiny mean gain: not a significant difference.
    swing = np.where(np.arange(30) % 2 == 0, 0.2, -0.19)
    cand = scores(base + swing)
    assert decide(GateSettings(require_significant=False), cand, scores(base), "1").promote
    strict = decide(GateSettings(), cand, scores(base), "1")  # the default requires significance
    assert not strict.promote
    assert "not significantly better" in strict.reason


def test_bootstrap_is_seeded_and_repeatable() -> None:
    d = noisy(50, 0.02, 0.1, seed=5)
    assert bootstrap_ci(d, 0.95, 2000, seed=7) == bootstrap_ci(d, 0.95, 2000, seed=7)
    low90, high90 = bootstrap_ci(d, 0.90, 2000, seed=7)
    low99, high99 = bootstrap_ci(d, 0.99, 2000, seed=7)
    assert low99 < low90 < d.mean() < high90 < high99


def test_fewer_than_2000_resamples_is_refused() -> None:
    with pytest.raises(ValidationError, match="bootstrap_resamples"):
        GateSettings(bootstrap_resamples=500)


def test_min_delta_must_be_exceeded() -> None:
    base = noisy(20, 0.7, 0.05, seed=6)
    assert not decide(GateSettings(min_delta=0.2), scores(base + 0.1), scores(base), "1").promote


def test_max_regression_guards_a_metric_that_need_not_improve() -> None:
    base = [ImageScore(f"id{i}", 0.70, 0.60) for i in range(10)]
    cand = [ImageScore(f"id{i}", 0.75, 0.55) for i in range(10)]  # Dice up, IoU down 0.05
    lenient = GateSettings(metrics=["dice"], max_regression={"iou": 0.1})
    assert decide(lenient, cand, base, "1").promote
    strict = decide(GateSettings(metrics=["dice"], max_regression={"iou": 0.01}), cand, base, "1")
    assert not strict.promote
    assert "iou fell by more than the allowed 0.01" in strict.reason


def test_worse_model_is_rejected_and_the_table_shows_it() -> None:
    decision = decide(GateSettings(), scores([0.5, 0.6]), scores([0.7, 0.8]), "1")
    assert not decision.promote
    table = decision.to_markdown()
    assert "| dice | 0.5500 | 0.7500 | -0.2000 | -0.2000 | [-0.2000, -0.2000] | 2 |" in table
    assert "| improve | dice | FAIL |" in table
    assert "keep production" in table


def test_a_baseline_that_fails_keeps_production_by_default() -> None:
    decision = decide(GateSettings(), scores([0.9, 0.9]), None, "3", baseline_error="weights do not load")
    assert not decision.promote
    assert "production version 3 could not be evaluated (weights do not load)" in decision.reason
    assert [(r.rule, r.passed) for r in decision.rules] == [("baseline", False)]


def test_a_baseline_that_fails_can_fall_back_to_the_floor() -> None:
    cfg = GateSettings(on_baseline_error="floor", floor=0.5)
    decision = decide(cfg, scores([0.9] * 5), None, "3", baseline_error="weights do not load")
    assert decision.promote
    assert decision.reason.startswith("baseline failed (weights do not load); mean Dice 0.9000 reaches")


def test_report_has_json_markdown_and_a_plot(tmp_path: Path) -> None:
    base = noisy(25, 0.7, 0.1, seed=8)
    decision = decide(GateSettings(), scores(base + 0.03), scores(base), "2")
    files = write_report(decision, tmp_path / "gate")
    assert sorted(p.name for p in files) == ["gate.json", "gate.md", "gate_dice.png"]
    body = json.loads((tmp_path / "gate" / "gate.json").read_text())
    assert body["promote"] is True and body["n_images"] == 25 and len(body["per_image"]) == 25
    assert {r["rule"] for r in body["rules"]} == {"improve", "significant"}
    assert (tmp_path / "gate" / "gate_dice.png").read_bytes()[:4] == b"\x89PNG"
    assert "20%-trimmed mean Δ | 95% CI of that" in (tmp_path / "gate" / "gate.md").read_text()


def test_scores_on_different_images_are_refused() -> None:
    other = [ImageScore("zzz", 0.9, 0.9), ImageScore("yyy", 0.9, 0.9)]
    with pytest.raises(GateError):
        decide(GateSettings(), scores([0.8, 0.9]), other, "1")


def test_no_test_images_is_an_error() -> None:
    with pytest.raises(GateError, match="test split is empty"):
        decide(GateSettings(), [], None)


def test_the_gate_imports_without_torch() -> None:
    # The gate's decision is numpy and scipy only: it runs where the service runs, without torch.
    # The gate stage around it (run records, ONNX scoring, the registry) needs no torch either.
    import subprocess
    import sys

    code = "import sys, wms.gate, wms.scores, wms.runs, wms.gating; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", result.stderr


def test_a_damaged_production_pointer_is_no_first_model(project_dir: Path) -> None:
    """Main names a production it cannot spell out: the candidate must not be judged by the floor alone."""
    from types import SimpleNamespace

    from wms.config import load_settings
    from wms.gating import production_per_main

    project = load_settings(start=project_dir)
    pointer = project.path(project.settings.tracking.pointer_dir) / "production_current.json"
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text("<<<<<<< HEAD\n")
    no_alias = SimpleNamespace(production=lambda: None)
    with pytest.raises(GateError, match="cannot be read and no version is aliased production"):
        production_per_main(project, no_alias)  # type: ignore[arg-type]
    aliased = SimpleNamespace(production=lambda: SimpleNamespace(version="3"))
    assert production_per_main(project, aliased) == "3"  # type: ignore[arg-type]


def test_a_registry_that_numbers_another_model_as_mains_production_stops_the_gate(
    project_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_tracking_db: Path
) -> None:
    """MLflow's database restored from an older backup (or reset) numbers new candidates as the
    versions main already names: the gate must not take another model for production."""
    import shutil

    from tests.test_registry import logged_run

    from wms.config import load_settings
    from wms.errors import RegistryError
    from wms.gating import production_per_main
    from wms.production import move_production
    from wms.registry import MlflowRegistry

    project = load_settings(start=project_dir)
    first = MlflowRegistry(project)
    first.register(logged_run(first, tmp_path, 0.7), {})
    move_production(first, project.path("models"), "1", action="promote", reason="first", by="test")
    assert production_per_main(project, first) == "1"

    shutil.copyfile(empty_tracking_db, tmp_path / "restored.db")
    monkeypatch.setenv("WMS_TRACKING__URI", f"sqlite:///{tmp_path / 'restored.db'}")
    restored = MlflowRegistry(load_settings(start=project_dir))
    restored.register(logged_run(restored, tmp_path, 0.9), {})  # version 1 again: another model
    said = r"on main \(the working tree\) names version 1 with model sha256 .*; is tracking\.uri the registry"
    with pytest.raises(RegistryError, match=said):
        production_per_main(project, restored)


def test_main_naming_a_version_the_restored_registry_lacks_stops_the_gate_before_a_number_is_reused(
    project_dir: Path, tmp_path: Path
) -> None:
    """MLflow restored from a backup older than the last promotion: a candidate registered now
    would take the number main's production had, so the gate stops and says what to do."""
    import sqlite3

    from tests.test_registry import logged_run

    from wms.config import load_settings
    from wms.gating import production_per_main
    from wms.production import move_production
    from wms.registry import MlflowRegistry

    project = load_settings(start=project_dir)
    registry = MlflowRegistry(project)
    database = project_dir / ".wms" / "mlflow.db"
    for dice in (0.7, 0.8, 0.9):
        if dice == 0.9:
            with sqlite3.connect(database) as live, sqlite3.connect(tmp_path / "backup.db") as copy:
                live.backup(copy)
        version = registry.register(logged_run(registry, tmp_path, dice), {}).version
        move_production(registry, project.path("models"), version, action="promote", reason="r", by="test")
    with sqlite3.connect(tmp_path / "backup.db") as copy, sqlite3.connect(database) as live:
        copy.backup(live)

    said = (
        r"names version 3, which the registry lacks \(it has 1, 2\).*"
        r"`wms model rollback .*` \(back to version 2\)"
    )
    with pytest.raises(GateError, match=said):
        production_per_main(project, registry)
