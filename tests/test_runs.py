"""The records a resumed run reads back: `run.json`, and `train.json` for a resumed gate or promote."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wms.errors import ModelPruned, RegistryError, UsageError
from wms.runs import PipelineRun, TrainedRun, load_trained, save_trained
from wms.scores import ImageScore


def test_a_training_record_reads_back_as_written(tmp_path: Path) -> None:
    trained = TrainedRun(
        "abc123",
        [ImageScore("a", 0.9, 0.8), ImageScore("b", 0.5, 0.4)],
        {"dice": 0.7, "iou": 0.6, "n": 2},
        "f" * 64,
        best_epoch=7,
    )
    save_trained(tmp_path, trained)
    assert load_trained(tmp_path) == trained


def test_a_record_written_before_the_best_epoch_was_kept_still_reads(tmp_path: Path) -> None:
    body = {"run_id": "abc123", "model_sha256": "f" * 64, "test_metrics": {"dice": 0.7}, "test_scores": []}
    (tmp_path / "train.json").write_text(json.dumps(body))
    trained = load_trained(tmp_path)
    assert (trained.run_id, trained.best_epoch) == ("abc123", None)


def test_resuming_a_run_whose_record_was_cut_short_is_one_line(
    project_dir: Path, cli: Callable[..., Any]
) -> None:
    run_dir = project_dir / ".wms" / "runs" / "20260101-000000-abcdef"
    PipelineRun("20260101-000000-abcdef", "data/incoming", run_dir).save()
    whole = (run_dir / "run.json").read_text()
    for cut in ("", whole[: len(whole) // 2]):  # a power loss before or while the file was written
        (run_dir / "run.json").write_text(cut)
        result = cli("pipeline", "resume", "20260101-000000-abcdef")
        assert result.exit_code == 2
        assert result.output.count("\n") == 1 and "Traceback" not in result.output
        assert "run.json cannot be read (cut short or edited)" in result.output
        assert "`wms pipeline run`" in result.output


def test_a_training_record_cut_short_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "train.json").write_text('{"run_id": "abc123", "test_scores": [{"image_id"')
    with pytest.raises(UsageError, match=r"train.json cannot be read \(cut short or edited\)"):
        load_trained(tmp_path)


def test_a_run_whose_candidate_was_pruned_is_not_told_to_resume_again(tmp_path: Path) -> None:
    """`wms pipeline resume` of an old run whose model `wms model prune` deleted: resuming again
    cannot bring it back, so the run says what the registry said and nothing else."""
    gone = (
        "the model files of run 1a2b3c4d were deleted by `wms model prune` on 2026-06-01 (it never "
        "served; its run keeps the metrics and reports); train again (`wms pipeline run`) or pick "
        "another version (`wms model list`)"
    )
    run = PipelineRun("20260101-000000-abcdef", "data/incoming", tmp_path)
    run.stages["gate"].status = "failed"
    run.fail(ModelPruned(gone))
    assert run.summary == f"failed at gate: {gone}" and run.next_step == ""
    run.fail(RegistryError("MLflow at http://127.0.0.1:5000 failed to download the model: timed out"))
    assert run.next_step == "continue with `wms pipeline resume 20260101-000000-abcdef`"
