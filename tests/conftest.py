"""Shared fixtures: an isolated project folder with tiny settings, and synthetic batches."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wms.cli.main import app
from wms.data.synth import synthesize

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT.parent / "shared" / "datasets" / "water-meters"

# Small enough that a training run takes seconds on two CPU cores.
TINY_SETTINGS = """
[data]
size = 64

[train]
epochs = 10
image_size = 32
batch_size = 8
learning_rate = 0.01
base_channels = 8
depth = 2

[gate]
floor = 0.0
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's WMS_* variables."""
    for name in list(os.environ):
        if name.startswith("WMS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project with tiny settings; the current folder during the test."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "wms.toml").write_text(TINY_SETTINGS)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def make_batch(tmp_path: Path) -> Callable[..., Path]:
    """Write a synthetic batch of pairs (64 px) and return its folder."""

    def make(name: str = "batch", count: int = 80, seed: int = 1, size: int = 64) -> Path:
        out = tmp_path / name
        synthesize(out, count=count, size=size, seed=seed)
        return out

    return make


@pytest.fixture
def cli() -> Callable[..., object]:
    """Invoke `wms ARGS...` in-process; returns click's Result."""
    runner = CliRunner()

    def invoke(*args: str) -> object:
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke
