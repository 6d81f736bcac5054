"""benchmarks/gpu_check.py where torch sees no GPU: the reason, not a hint to go elsewhere.

Its first run on a lent GPU machine is the one that must say why CUDA is missing: a driver older
than the CUDA of torch's wheel reads like no GPU at all. torch's view is faked at the boundary
(`torch.cuda.is_available`, `torch.version.cuda`), nvidia-smi by a fake command on PATH.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from tests.conftest import load_benchmark


def fake_nvidia_smi(bin_dir: Path, driver: str | None) -> None:
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    answer = f'echo "{driver}"' if driver else 'echo "No devices were found"; exit 6'
    script.write_text(f"#!/bin/sh\n{answer}\n")
    script.chmod(0o755)


@pytest.mark.parametrize(
    ("build", "driver", "said"),
    [
        ("13.0", "570.133.20", "built for CUDA 13.0; NVIDIA driver 570.133.20"),
        ("13.0", None, "the NVIDIA driver is not loaded"),
        (None, "580.95.05", "(the CPU build; NVIDIA driver 580.95.05"),
    ],
    ids=["old-driver", "no-driver-loaded", "cpu-wheel"],
)
def test_no_cuda_says_why_and_stops(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    build: str | None,
    driver: str | None,
    said: str,
) -> None:
    fake_nvidia_smi(tmp_path / "bin", driver)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", build)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py"])
    check = load_benchmark("gpu_check")
    assert check.main() == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"no CUDA device visible to torch {torch.__version__} ("), err
    assert said in err
    assert "run with --dry-run here, or on the GPU machine" not in err  # what it said on the GPU machine


def test_no_nvidia_smi_means_no_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py"])
    assert load_benchmark("gpu_check").main() == 2
    assert "no nvidia-smi: no NVIDIA driver is installed here" in capsys.readouterr().err
