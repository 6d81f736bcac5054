"""The picture hash behind validation's near-duplicate check: copies match, distinct photos do not."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageOps

from wms.data.lookalike import NEAR_BITS, THUMBNAIL_SIDE, near_twins, picture_hashes
from wms.data.pairs import DECODERS
from wms.sandbox.images import summarize_file

REAL_DATA = Path(__file__).resolve().parents[3] / "shared/datasets/water-meters"


def validation_hashes(path: Path) -> tuple[int, ...]:
    """The picture hashes validation gives the photo in `path` (a JPEG drafted, as it decodes one)."""
    summary = summarize_file(path, DECODERS, thumbnail_side=THUMBNAIL_SIDE, draft=True)
    assert summary.thumbnail is not None
    return picture_hashes(summary.thumbnail, summary.orientation)


@pytest.mark.realdata
def test_no_two_real_photos_are_taken_for_copies_and_their_copies_are(tmp_path: Path) -> None:
    if not (REAL_DATA / "images").is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    photos = sorted(p for p in (REAL_DATA / "images").iterdir() if not p.name.startswith("."))
    hashes, copies = [], []
    copy = tmp_path / "copy.jpg"
    for k, path in enumerate(photos):
        hashes.append(validation_hashes(path))  # as stored, and turned upright where EXIF says so
        if k % 10 == 0:  # what preparation and a labelling tool do to a photo: turn, resize, re-encode
            image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
            image.resize((512, 512), Image.Resampling.BILINEAR).save(copy, "JPEG", quality=75)
            copies.append(validation_hashes(copy))
    assert len(hashes) == 830
    assert near_twins(hashes, NEAR_BITS + 4) == []  # a margin beyond the threshold, too
    originals = hashes[::10]
    assert sum(len(h) == 2 for h in originals) > 10  # turned by their EXIF: their copies are saved upright
    for original, (copy_hash,) in zip(originals, copies, strict=True):
        assert min(n_bits(h ^ copy_hash) for h in original) <= NEAR_BITS // 2


def n_bits(x: int) -> int:
    return bin(x).count("1")
