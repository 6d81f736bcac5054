"""A store on S3 that cannot be reached, or read without credentials, is one line, not a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from wms.batches import BatchLedger, record_outcome
from wms.data.store import DatasetStore
from wms.errors import BackendError


def test_no_credentials_is_named(no_aws: None, make_batch: Callable[..., Path]) -> None:
    store = DatasetStore("s3://wms-nowhere/datasets")
    with pytest.raises(
        BackendError,
        match=r"could not list versions in the dataset store s3://wms-nowhere/datasets "
        r"\(no AWS credentials: set AWS_ACCESS_KEY_ID",
    ):
        store.versions()
    with pytest.raises(
        BackendError,
        match=r"could not list (erased )?blobs in the dataset store s3://wms-nowhere/datasets "
        r"\(no AWS credentials",
    ):
        store.ingest(make_batch(count=2), None)


def test_an_endpoint_that_does_not_answer_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(BackendError, match=r'could not read a manifest .* "http://127\.0\.0\.1:9/'):
        DatasetStore("s3://wms-nowhere/datasets").manifest("0123456789ab")


def test_a_batch_outcome_the_store_cannot_take_is_told_not_raised(no_aws: None) -> None:
    """The run's own outcome matters more: it is reported, and the sweeper looks at the batch again."""
    store = DatasetStore("s3://wms-nowhere/datasets")
    ledger = BatchLedger(store.fs, store.root)
    sha = "0" * 40
    with pytest.raises(BackendError, match=r"could not read the batch record .*no AWS credentials"):
        ledger.get(sha)
    run = SimpleNamespace(outputs={"batch": {"sha": sha}}, summary="promoted", run_id="r1")
    told: list[str] = []
    record_outcome(ledger, run, "promoted", told.append)  # type: ignore[arg-type]  # a stand-in run
    assert len(told) == 1 and told[0].startswith("the batch outcome is not recorded: could not")
