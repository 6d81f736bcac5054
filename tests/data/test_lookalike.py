"""The picture hash behind validation's near-duplicate check: copies match, distinct photos do not."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from wms.data.lookalike import NEAR_BITS, THUMBNAIL_SIDE, near_twins, picture_hash
from wms.sandbox.child import grey_thumbnail

REAL_DATA = Path(__file__).resolve().parents[3] / "shared/datasets/water-meters"


@pytest.mark.realdata
def test_no_two_real_photos_are_taken_for_copies_and_their_copies_are() -> None:
    if not (REAL_DATA / "images").is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    photos = sorted(p for p in (REAL_DATA / "images").iterdir() if not p.name.startswith("."))
    hashes, copies = [], []
    for k, path in enumerate(photos):
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        hashes.append(picture_hash(grey_thumbnail(image, THUMBNAIL_SIDE)))
        if k % 40 == 0:  # what preparation and a labelling tool do to a photo: resize, re-encode
            small = io.BytesIO()
            image.resize((512, 512), Image.Resampling.BILINEAR).save(small, "JPEG", quality=75)
            copies.append(picture_hash(grey_thumbnail(Image.open(small), THUMBNAIL_SIDE)))
    assert len(hashes) == 830
    assert near_twins(hashes, NEAR_BITS + 4) == []  # a margin beyond the threshold, too
    originals = hashes[::40]
    assert all(n_bits(a ^ b) <= NEAR_BITS // 2 for a, b in zip(originals, copies, strict=True))


def n_bits(x: int) -> int:
    return bin(x).count("1")
