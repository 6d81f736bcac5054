"""The training record a resumed gate or promote reads back (`train.json`)."""

from __future__ import annotations

import json
from pathlib import Path

from wms.runs import TrainedRun, load_trained, save_trained
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
