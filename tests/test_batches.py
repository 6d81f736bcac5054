"""Batch records as the sweeper reads them back."""

from __future__ import annotations

from pathlib import Path

import pytest

from wms.batches import BatchLedger, is_finished, outcome_of
from wms.data.store import DatasetStore
from wms.errors import BackendError

SHA = "a" * 40


def test_a_record_write_cut_short_keeps_the_previous_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DatasetStore(str(tmp_path / "store"))
    ledger = BatchLedger(store.fs, store.root)
    ledger.start("data/20260101-000000", SHA, "run-1")
    real = Path.write_bytes

    def disk_full(self: Path, data: bytes) -> int:
        real(self, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(BackendError, match="No space left on device"):
        ledger.finish(SHA, "promoted", "promoted version 1")
    monkeypatch.undo()

    record = ledger.get(SHA)  # still the run's record, not a batch that was never run
    assert record is not None and (record["status"], record["attempts"]) == ("running", 1)
    assert [Path(p).name for p in store.fs.ls(ledger.root, detail=False)] == [f"{SHA}.json"]
    ledger.finish(SHA, "promoted", "promoted version 1")
    assert is_finished(ledger.get(SHA))


def test_a_promotion_github_merged_at_once_is_recorded_promoted(tmp_path: Path) -> None:
    """'published' is a pull request still to merge; one GitHub merged during the run is in main."""
    from wms.runs import PipelineRun

    run = PipelineRun("r1", "batch", tmp_path, promoted=True)
    run.outputs |= {"on_main": False, "merged": True}  # GitHub merged it; this checkout is stale
    assert outcome_of(run) == "promoted"
    run.outputs["merged"] = False  # opened with auto-merge: it merges when the checks pass
    assert outcome_of(run) == "published"
    del run.outputs["merged"]  # a record from before `merged` was kept
    run.outputs["on_main"] = True
    assert outcome_of(run) == "promoted"
