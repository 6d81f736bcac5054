"""The corrections check on a store with a long history: it reads only the versions it must."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.data.test_store import copy_pair

from wms.data.store import DatasetStore
from wms.errors import ConflictError

PID = "synth_s1_00000"


def test_a_mask_fix_on_a_long_history_reads_no_older_version_and_a_stale_copy_is_still_refused(
    make_batch: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch adds a version; a check that walked back to the version that added the pair read
    one manifest per version (about 10 s at 200 versions on a folder store, more on S3)."""
    store = DatasetStore(str(tmp_path / "store"), workers=2)
    first = make_batch("first", count=3, seed=1)
    version = store.ingest(first, None).version
    for seed in range(2, 14):
        version = store.ingest(make_batch(f"b{seed}", count=1, seed=seed), version).version
    fix = tmp_path / "fix"
    copy_pair(first, PID, fix, PID)
    new_mask = make_batch("other", count=1, seed=99) / "masks" / "synth_s99_00000.png"
    (fix / "masks" / f"{PID}.png").write_bytes(new_mask.read_bytes())  # bytes no version holds
    reads: list[str] = []
    read = store.manifest

    def counted(v: str) -> dict[str, Any]:
        reads.append(v)
        return read(v)

    monkeypatch.setattr(store, "manifest", counted)
    fixed = store.ingest(fix, version, correct=True)
    assert fixed.corrected == [PID]
    assert reads == [version]  # the base alone

    reads.clear()
    stale = tmp_path / "stale"
    copy_pair(first, PID, stale, PID)  # the mask the fix replaced, held until `version`
    with pytest.raises(ConflictError, match=rf"{PID} \(its mask is the one version {version} held\)"):
        store.ingest(stale, fixed.version, correct=True)
    assert reads == [fixed.version, version]  # stops at the latest version that held it
