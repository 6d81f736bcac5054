"""`wms train` against a tracking server, as an operator sees its output."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SUPPRESS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


@pytest.fixture
def mlflow_prints_urls(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MLflow's default: it prints a run's URLs when the run ends (the variable unset)."""
    monkeypatch.delenv(SUPPRESS, raising=False)
    yield
    os.environ.pop(SUPPRESS, None)


def test_train_on_a_server_prints_its_own_link_and_none_of_mlflows(
    cli: Callable[..., Any],
    project_dir: Path,
    make_batch: Callable[..., Path],
    tracking: str,
    mlflow_prints_urls: None,
) -> None:
    result = cli("train", make_batch(count=12), "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "View run" not in result.output and "View experiment" not in result.output
    run_id = result.output.split("run id: ")[1].split()[0]
    url = os.environ["WMS_TRACKING__URI"]
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"see it at {url}/#/experiments/") and last.endswith(f"/runs/{run_id}")
    assert "mlflow ui --backend-store-uri http" not in result.output  # no UI runs on a server's URL
