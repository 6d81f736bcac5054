"""`wms predict`'s engine: masks for a folder of photos, a batch in memory at a time, all or none."""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.conftest import png_bomb

from wms.data.synth import synth_pair
from wms.errors import DataError
from wms.predict import predict_files
from wms.train.spec import ModelSpec


class BrightnessModel:
    """Foreground where a pixel is bright; it also counts the decoded photos still alive."""

    spec = ModelSpec(architecture="unet", image_size=32, threshold=0.5)

    def __init__(self) -> None:
        self.seen: list[weakref.ref[Image.Image]] = []
        self.most_alive = 0

    def probability_maps(self, images: list[Image.Image]) -> list[np.ndarray]:
        self.seen += [weakref.ref(image) for image in images]
        gc.collect()
        self.most_alive = max(self.most_alive, sum(ref() is not None for ref in self.seen))
        return [np.asarray(image.convert("L"), np.float32) / 255 for image in images]


def _photos(folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for index in range(count):
        image, _ = synth_pair(seed=3, index=index, size=48)
        image.save(path := folder / f"meter-{index:02d}.jpg")
        paths.append(path)
    return paths


def test_photos_are_decoded_a_batch_at_a_time(tmp_path: Path) -> None:
    model = BrightnessModel()
    done = predict_files(model, _photos(tmp_path / "photos", 20), tmp_path / "masks", batch_size=4)
    assert [p.mask.name for p in done] == [f"meter-{i:02d}.png" for i in range(20)]
    assert all(p.mask.is_file() for p in done)
    assert model.most_alive <= 4, f"{model.most_alive} decoded photos held at once for batches of 4"


def test_a_photo_that_fails_to_decode_halfway_leaves_no_masks(tmp_path: Path) -> None:
    paths = _photos(tmp_path / "photos", 10)
    data = paths[7].read_bytes()
    paths[7].write_bytes(data[: len(data) // 3])  # its header reads; its pixels do not
    with pytest.raises(DataError, match=r"cannot read .*meter-07\.jpg as an image"):
        predict_files(BrightnessModel(), paths, tmp_path / "masks", batch_size=2)
    assert not (tmp_path / "masks").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a photo", r"cannot read .*odd\.png as an image"),
        (png_bomb(20_000, 20_000), r"odd\.png is too large to decode: Image size \(400000000 pixels\)"),
    ],
    ids=["text", "decompression bomb"],
)
def test_a_file_that_is_no_photo_stops_the_run_before_any_photo_is_segmented(
    tmp_path: Path, content: bytes, message: str
) -> None:
    paths = _photos(tmp_path / "photos", 3)
    (odd := tmp_path / "photos" / "odd.png").write_bytes(content)
    model = BrightnessModel()
    with pytest.raises(DataError, match=message):
        predict_files(model, [*paths, odd], tmp_path / "masks")
    assert model.seen == []
    assert not (tmp_path / "masks").exists()


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 48 48\n0 0 moveto 48 48 lineto stroke\nshowpage\n%%EOF\n"


def test_a_postscript_file_named_as_a_photo_never_reaches_ghostscript(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By its content Pillow reads a file as EPS and runs Ghostscript on it; a photo is never one."""
    from PIL import EpsImagePlugin

    tools = tmp_path / "bin"
    tools.mkdir()
    (gs := tools / "gs").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "gs.log"}\nexit 1\n')
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # found on PATH at first use
    paths = _photos(tmp_path / "photos", 2)
    (odd := tmp_path / "photos" / "meter-99.jpg").write_bytes(EPS)
    model = BrightnessModel()
    with pytest.raises(DataError, match=r"cannot read .*meter-99\.jpg as an image: it is none of JPEG, PNG"):
        predict_files(model, [*paths, odd], tmp_path / "masks")
    assert not (tmp_path / "gs.log").exists(), "Ghostscript was run on the file"
    assert model.seen == []


@pytest.mark.parametrize(("kind", "refused"), [("WEBP", False), ("TIFF", False), ("GIF", True)])
def test_a_photo_is_read_in_the_formats_cameras_and_browsers_write(
    tmp_path: Path, kind: str, refused: bool
) -> None:
    image, _ = synth_pair(seed=3, index=0, size=48)
    image.save(photo := tmp_path / "meter.png", kind)  # the name says PNG; the content decides
    if refused:
        with pytest.raises(DataError, match=r"meter\.png as an image: it is none of"):
            predict_files(BrightnessModel(), [photo], tmp_path / "masks")
    else:
        (done,) = predict_files(BrightnessModel(), [photo], tmp_path / "masks")
        assert Image.open(done.mask).size == (48, 48)
