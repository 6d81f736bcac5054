"""A served model gives ONNX Runtime's working memory back after each photo, so an idle pod (a
rollback copy, a quiet night) holds what the loaded model needs, not its busiest moment."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import sys
from pathlib import Path
from PIL import Image
from wms.serve.model import load_folder
from wms.train.export import OnnxSegmenter

def rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

folder, served = Path(sys.argv[1]), sys.argv[2] == "served"
model = load_folder(folder, threads=1).segmenter if served else OnnxSegmenter.load(folder, threads=1)
photo = Image.new("RGB", (640, 480), (90, 120, 150))
loaded = rss_mib()
for _ in range(3):
    model.probability_maps([photo])
print(rss_mib() - loaded)
"""


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A U-Net at 512 px, as the gpu recipe's, but narrow: its working memory shows in RSS."""
    import torch

    from wms.serve.model import ModelCard
    from wms.train.export import export_onnx
    from wms.train.model import build_model
    from wms.train.segmenter import ONNX_FILE, ModelSpec, Segmenter

    folder = tmp_path_factory.mktemp("wide") / "model"
    arch = {"base_channels": 8, "depth": 2}
    torch.manual_seed(0)
    spec = ModelSpec(architecture="unet", image_size=512, threshold=0.5, kwargs=arch)
    segmenter = Segmenter(build_model("unet", **arch), spec)
    segmenter.save(folder)
    export_onnx(segmenter, folder / ONNX_FILE)
    sha = hashlib.sha256((folder / ONNX_FILE).read_bytes()).hexdigest()
    ModelCard(version="wide", onnx_sha256=sha).write(folder)
    return folder


def _growth_mib(folder: Path, how: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(folder), how],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", **_pythonpath()},
    )
    return float(done.stdout.strip().splitlines()[-1])


def _pythonpath() -> dict[str, str]:
    import os

    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


def test_a_served_model_gives_its_working_memory_back(wide_model: Path) -> None:
    kept = _growth_mib(wide_model, "kept")  # ONNX Runtime's default: the arena keeps its peak
    served = _growth_mib(wide_model, "served")
    assert kept > 40, f"the probe model should need working memory to show; grew {kept:.0f} MiB"
    assert served < kept / 3, f"after three photos the server holds {served:.0f} MiB more (arena: {kept:.0f})"
