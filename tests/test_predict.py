"""`wms predict`'s engine: masks for a folder of photos, a batch in memory at a time, all or none."""

from __future__ import annotations

import gc
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
