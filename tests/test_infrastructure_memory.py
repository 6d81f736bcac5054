"""The serving pod's memory limit holds the photos its settings let in, all at once.

Peak resident memory of `wms serve`, measured with benchmarks/serve_memory.py (a fresh server
per case, the default [train] model, JPEG photos; x86_64, Python 3.11):
- after start, before any photo: 117 MiB;
- one 39.9-megapixel photo: 520 MiB (786 before resize_bilinear filled its map a band at a time);
- two at once: 903 and 928 MiB in two runs (1307 before: over the chart's old 1 GiB limit, so
  both requests were killed);
- 10 and 20 megapixels, one photo: 244 and 339 MiB.
That is 9.7 bytes a photo pixel between sizes, 10.3-10.7 for each of two at once: the decoded
photo (3 bytes a pixel, kept for capture), the float32 probability map (4), the mask and its PNG
pixels (2), and what the allocator keeps. BYTES_PER_PIXEL rounds that up; MARGIN covers what a
measurement on one machine misses.

The model the workflows deploy is the gpu recipe's U-Net (512 px, base 32, depth 4), and it
needs more than the default one: 221 MiB loaded, and ONNX Runtime's working memory for each
run at once (about 300 MiB: 676 MiB for two runs with its arena kept, 490 given back after
each). Two 39.9-megapixel photos at once took a `wms serve` of it to 1255-1615 MiB in three runs
(benchmarks/serve_memory.py --model gpu; how much depends on how the two runs overlap): over the
chart's old 1280Mi, where the kernel kills the pod. BASE and MODEL_RUN are those numbers, rounded
up.

Each running prediction also holds its upload, read whole; each of the serve.maxQueue waiting
ones only the first MB of its spool (the rest is in /tmp). Without that bound, 60 uploads of
19 MB at once took `wms serve` to 1570 MiB and its spool to 988 MiB.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CHART_VALUES = REPO / "devops" / "helm" / "wms-model" / "values.yaml"
CLUSTER_VALUES = REPO / "infrastructure" / "helm-values.yaml"
MIB = 2**20
BASE = 240 * MIB
MODEL_RUN = 300 * MIB  # ONNX Runtime's working memory for one photo of the gpu recipe's U-Net
BYTES_PER_PIXEL = 11
MARGIN = 1.2
SPOOL_IN_MEMORY = MIB  # starlette's multipart parser keeps a file part in memory up to 1 MB
DEPLOYMENT = REPO / "devops" / "helm" / "wms-model" / "templates" / "deployment.yaml"
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9, "": 1}


def _bytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", str(quantity))
    assert match, f"unexpected memory quantity {quantity!r}"
    return int(float(match[1]) * UNITS[match[2] or ""])


def _merged(*files: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in files:
        layer = yaml.safe_load(path.read_text())
        for key in ("serve", "resources"):
            values.setdefault(key, {})
            for name, value in layer.get(key, {}).items():
                merged = {**values[key].get(name, {}), **value} if isinstance(value, dict) else value
                values[key][name] = merged
    return values


@pytest.mark.parametrize(
    "files", [(CHART_VALUES,), (CHART_VALUES, CLUSTER_VALUES)], ids=["chart defaults", "cluster values"]
)
def test_the_memory_limit_holds_max_concurrency_photos_of_max_pixels(files: tuple[Path, ...]) -> None:
    values = _merged(*files)
    serve = values["serve"]
    limit = _bytes(values["resources"]["limits"]["memory"])
    upload = serve["maxUploadMb"] * MIB
    need = BASE + serve["maxConcurrency"] * (MODEL_RUN + serve["maxPixels"] * BYTES_PER_PIXEL + upload)
    need += serve["maxQueue"] * SPOOL_IN_MEMORY
    assert limit >= MARGIN * need, (
        f"memory limit {limit / MIB:.0f} MiB, but {serve['maxConcurrency']} photos of {serve['maxPixels']:,} "
        f"pixels at once, with {serve['maxQueue']} more waiting, need about {need / MIB:.0f} MiB "
        f"(+{MARGIN - 1:.0%}): raise resources.limits.memory or lower serve.maxPixels, "
        "serve.maxUploadMb, serve.maxConcurrency or serve.maxQueue"
    )


@pytest.mark.parametrize(
    "files", [(CHART_VALUES,), (CHART_VALUES, CLUSTER_VALUES)], ids=["chart defaults", "cluster values"]
)
def test_tmp_holds_the_spool_of_every_upload_the_server_lets_in(files: tuple[Path, ...]) -> None:
    """Uploads over 1 MB are spooled to /tmp, an emptyDir whose sizeLimit the kubelet enforces by
    evicting the pod; the server lets in serve.maxConcurrency + serve.maxQueue predictions at once."""
    serve = _merged(*files)["serve"]
    match = re.search(r"emptyDir: \{sizeLimit: (\S+)\}", DEPLOYMENT.read_text())
    assert match, "the /tmp emptyDir has no sizeLimit"
    size = _bytes(match[1])
    uploads = serve["maxConcurrency"] + serve["maxQueue"]
    need = uploads * serve["maxUploadMb"] * MIB
    assert size >= need, (
        f"/tmp holds {size / MIB:.0f} MiB, but {uploads} uploads of {serve['maxUploadMb']} MiB at once "
        f"spool {need / MIB:.0f} MiB there: raise the emptyDir's sizeLimit or lower serve.maxQueue"
    )
