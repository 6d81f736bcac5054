"""Dataset preparation: orientation, modes, binary masks, pad mode, skips, atomic output, real data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tests.conftest import POSTSCRIPT

import wms.data.prepare as prepare_module
from wms.data import prepare_dataset, synthesize, validate_dataset
from wms.errors import UsageError

SIZE = 32
REAL_DATA = Path(__file__).resolve().parents[3] / "shared/datasets/water-meters"
RED = (220, 30, 30)


def _layout(root: Path) -> Path:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def _rotated_pair(root: Path, stem: str = "rot") -> None:
    """A photo stored 120x90 with EXIF orientation 6 (shown 90x120) whose top quarter is red when shown."""
    stored = np.full((90, 120, 3), 200, dtype=np.uint8)
    stored[:, :30] = RED  # a quarter turn clockwise moves the stored left strip to the shown top
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(root / f"images/{stem}.jpg", quality=95, exif=exif)
    mask = np.zeros((120, 90), dtype=np.uint8)
    mask[:30] = 255
    Image.fromarray(mask, "L").save(root / f"masks/{stem}.jpg", quality=75)  # JPEG: not binary


def _load(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return img


def test_output_contract_and_exif_orientation(tmp_path: Path) -> None:
    src = _layout(tmp_path / "raw")
    _rotated_pair(src)
    rgba = np.zeros((50, 70, 4), dtype=np.uint8)
    rgba[..., :3], rgba[..., 3] = 120, 128
    Image.fromarray(rgba, "RGBA").save(src / "images/rgba.png")
    Image.new("L", (70, 50), 0).save(src / "masks/rgba.png")
    Image.new("RGB", (40, 40), (10, 200, 10)).convert("P").save(src / "images/pal.png")
    Image.new("1", (40, 40), 1).save(src / "masks/pal.png")

    report = prepare_dataset(src, tmp_path / "out", size=SIZE)

    assert report.written == 3 and report.skipped == [] and report.out == tmp_path / "out"
    for stem in ("rot", "rgba", "pal"):
        image = _load(tmp_path / f"out/images/{stem}.jpg")
        mask = _load(tmp_path / f"out/masks/{stem}.png")
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (SIZE, SIZE)
        assert "exif" not in image.info
        assert mask.format == "PNG" and mask.mode == "L" and mask.size == (SIZE, SIZE)
        assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}
    pixels = np.asarray(_load(tmp_path / "out/images/rot.jpg")).astype(int)
    mask = np.asarray(_load(tmp_path / "out/masks/rot.png"))
    assert mask[:6].min() == 255 and mask[10:].max() == 0  # the top quarter, as shown
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 90)
    assert red[:6].all() and not red[10:].any()  # the photo turned with it
    assert np.asarray(_load(tmp_path / "out/masks/pal.png")).min() == 255
    assert validate_dataset(tmp_path / "out", size=SIZE).ok


def test_pad_keeps_aspect(tmp_path: Path) -> None:
    src = _layout(tmp_path / "raw")
    Image.new("RGB", (120, 60), (200, 200, 200)).save(src / "images/wide.png")
    Image.new("L", (120, 60), 255).save(src / "masks/wide.png")
    prepare_dataset(src, tmp_path / "out", size=SIZE, resize="pad")
    image = np.asarray(_load(tmp_path / "out/images/wide.jpg")).astype(int)
    mask = np.asarray(_load(tmp_path / "out/masks/wide.png"))
    assert mask.shape == (SIZE, SIZE)
    assert (mask[8:24] == 255).all()  # 120x60 scaled to 32x16, centred
    assert (mask[:8] == 0).all() and (mask[24:] == 0).all()
    assert image[:6].max() < 20 and image[26:].max() < 20  # black bars (JPEG rings near the edge)
    assert image[10:22].min() > 180


def test_unreadable_and_unpaired_files_are_listed_not_fatal(tmp_path: Path) -> None:
    src = tmp_path / "raw"
    ids = synthesize(src, 4, size=40, seed=0)
    (src / f"images/{ids[0]}.png").write_text("not an image")
    (src / f"masks/{ids[1]}.png").write_bytes((src / f"masks/{ids[1]}.png").read_bytes()[:100])
    (src / f"masks/{ids[2]}.png").unlink()
    report = prepare_dataset(src, tmp_path / "out", size=SIZE)
    assert report.written == 1
    skipped = {s.path: s.reason for s in report.skipped}
    assert set(skipped) == {f"images/{ids[0]}.png", f"masks/{ids[1]}.png", f"images/{ids[2]}.png"}
    assert "content is neither PNG nor JPEG" in skipped[f"images/{ids[0]}.png"]
    assert "cannot decode" in skipped[f"masks/{ids[1]}.png"]  # truncated
    assert "no mask" in skipped[f"images/{ids[2]}.png"]
    assert sorted(p.stem for p in (tmp_path / "out/images").iterdir()) == [ids[3]]


def test_only_png_and_jpeg_content_is_decoded_whatever_the_name(
    tmp_path: Path, ghostscript: tuple[dict[str, str], Path]
) -> None:
    """auto_prepare prepares a pushed batch before anything validates it, in the job that holds
    the tokens: a .png that is PostScript must not reach Ghostscript, nor a BMP Pillow's BMP decoder."""
    src = tmp_path / "raw"
    ids = synthesize(src, 3, size=40, seed=0)
    (src / f"images/{ids[0]}.png").write_text(POSTSCRIPT)
    Image.new("RGB", (40, 40), RED).save(src / f"images/{ids[1]}.png", "BMP")
    env, ran = ghostscript
    code = (
        "import json, sys; from wms.data import prepare_dataset; "
        f"report = prepare_dataset(sys.argv[1], sys.argv[2], size={SIZE}, workers=1); "
        "print(json.dumps([report.written, [(s.code, s.path, s.reason) for s in report.skipped]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(src), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert not ran.exists(), f"prepare ran gs {ran.read_text()!r}"
    written, skipped = json.loads(done.stdout)
    assert written == 1
    assert sorted((code, path) for code, path, _ in skipped) == [
        ("unreadable", f"images/{ids[0]}.png"),
        ("unreadable", f"images/{ids[1]}.png"),
    ]
    assert all("content is neither PNG nor JPEG" in reason for _, _, reason in skipped)


def test_mismatched_mask_is_skipped(tmp_path: Path) -> None:
    src = _layout(tmp_path / "raw")
    Image.new("RGB", (60, 40)).save(src / "images/a.png")
    Image.new("L", (40, 60), 255).save(src / "masks/a.png")  # not rotated with its photo
    report = prepare_dataset(src, tmp_path / "out", size=SIZE)
    assert report.written == 0 and [s.path for s in report.skipped] == ["masks/a.png"]
    assert "re-export the mask" in report.skipped[0].reason
    assert not (tmp_path / "out").exists()  # nothing prepared: no empty images/ and masks/ left
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # nor the staging folder


def test_refuses_non_empty_out_unless_overwrite(tmp_path: Path) -> None:
    src = tmp_path / "raw"
    synthesize(src, 2, size=40, seed=0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UsageError, match="--overwrite"):
        prepare_dataset(src, out, size=SIZE)
    assert (out / "keep.txt").exists()
    report = prepare_dataset(src, out, size=SIZE, overwrite=True)
    assert report.written == 2 and not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]  # no temporary folders left
    with pytest.raises(UsageError, match="overlaps"):
        prepare_dataset(src, src / "prepared", size=SIZE)


def test_crash_leaves_no_half_written_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "raw"
    synthesize(src, 3, size=40, seed=0)
    real = prepare_module._prepare_pair
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "_prepare_pair", flaky)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(src, tmp_path / "out", size=SIZE, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_parallel_matches_serial_and_reports_progress(tmp_path: Path) -> None:
    src = tmp_path / "raw"
    synthesize(src, 20, size=48, seed=2)
    calls: list[int] = []
    prepare_dataset(src, tmp_path / "par", size=SIZE, workers=2, progress=lambda: calls.append(1))
    prepare_dataset(src, tmp_path / "ser", size=SIZE, workers=1)
    assert len(calls) == 20
    for sub in ("images", "masks"):
        names = sorted(p.name for p in (tmp_path / "par" / sub).iterdir())
        assert len(names) == 20
        for name in names:
            assert (tmp_path / "par" / sub / name).read_bytes() == (
                tmp_path / "ser" / sub / name
            ).read_bytes()


def test_bad_arguments(tmp_path: Path) -> None:
    synthesize(tmp_path / "raw", 1, size=40, seed=0)
    with pytest.raises(UsageError, match="resize"):
        prepare_dataset(tmp_path / "raw", tmp_path / "out", resize="crop")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="size"):
        prepare_dataset(tmp_path / "raw", tmp_path / "out", size=0)


def test_cli_prepare(cli: Callable[..., Any], project_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "raw"
    ids = synthesize(src, 3, size=80, seed=0)
    ok = cli("data", "prepare", src, tmp_path / "out")
    assert ok.exit_code == 0, ok.output
    assert "wrote 3 pairs (64x64" in ok.output  # data.size of the project's tiny settings
    assert _load(tmp_path / f"out/images/{ids[0]}.jpg").size == (64, 64)
    (src / f"images/{ids[1]}.png").write_text("broken")
    again = cli("data", "prepare", src, tmp_path / "out")
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = cli("data", "prepare", src, tmp_path / "out", "--overwrite", "--size", "32", "--resize", "pad")
    assert bad.exit_code == 1
    assert f"images/{ids[1]}.png" in bad.output and "wrote 2 pairs (32x32, pad)" in bad.output
    assert cli("data", "prepare", src, tmp_path / "o2", "--resize", "crop").exit_code == 2


@pytest.mark.realdata
def test_real_data_first_60_pairs_prepare_into_a_valid_dataset(tmp_path: Path) -> None:
    if not (REAL_DATA / "images").is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    images = sorted(p for p in (REAL_DATA / "images").iterdir() if not p.name.startswith("."))[:60]
    src = _layout(tmp_path / "raw")
    rotated = 0
    for image in images:
        shutil.copy(image, src / "images" / image.name)
        for mask in (REAL_DATA / "masks").glob(f"{image.stem}.*"):
            shutil.copy(mask, src / "masks" / mask.name)
        rotated += Image.open(image).getexif().get(0x0112, 1) not in (0, 1)
    assert rotated, "expected some EXIF-rotated photos among the first 60"
    report = prepare_dataset(src, tmp_path / "out", size=512)
    assert report.written == 60 and report.skipped == []
    checked = validate_dataset(tmp_path / "out", size=512)
    assert checked.ok and checked.issues == [], checked.to_markdown()
    assert 0.002 < checked.stats["foreground_fraction"]["mean"] < 0.15


def test_sixteen_bit_photo_and_mask_are_scaled_not_clipped(tmp_path: Path) -> None:
    """A 16-bit PNG (a raw developer's photo, a mask painted in 16 bits) keeps its tones and its edge."""
    src = _layout(tmp_path / "raw")
    photo = np.tile(np.linspace(0, 65535, SIZE, dtype=np.uint16), (SIZE, 1))  # dark to bright
    Image.fromarray(photo).save(src / "images/deep.png")
    mask = np.zeros((SIZE, SIZE), dtype=np.uint16)
    mask[8:24, 8:24] = 65535
    mask[4:8, 8:24] = 257 * 40  # a faint grey fringe, well below mid-grey
    Image.fromarray(mask).save(src / "masks/deep.png")
    assert _load(src / "masks/deep.png").mode == "I;16"

    prepare_dataset(src, tmp_path / "out", size=SIZE)

    prepared = np.asarray(_load(tmp_path / "out/images/deep.jpg").convert("L")).astype(int)
    assert prepared[:, :4].mean() < 30 and prepared[:, -4:].mean() > 225  # not clipped to white
    prepared_mask = np.asarray(_load(tmp_path / "out/masks/deep.png"))
    assert (prepared_mask == 255).sum() == 16 * 16  # the fringe stays background
    assert validate_dataset(tmp_path / "out", size=SIZE).ok


@pytest.mark.parametrize("colour", [(255, 0, 0), (0, 0, 255), (0, 160, 0)])
def test_coloured_mask_keeps_its_label(tmp_path: Path, colour: tuple[int, int, int]) -> None:
    """A label painted in colour on black (or on transparency) is foreground, not an empty mask."""
    src = _layout(tmp_path / "raw")
    window = np.zeros((SIZE, SIZE), dtype=bool)
    window[8:24, 4:28] = True
    for stem, mode in (("painted", "RGB"), ("layer", "RGBA")):
        Image.new("RGB", (SIZE, SIZE), (90, 90, 90)).save(src / f"images/{stem}.jpg")
        label = np.zeros((SIZE, SIZE, len(mode)), dtype=np.uint8)
        label[window] = (*colour, 255)[: len(mode)]
        if mode == "RGBA":
            label[~window] = (255, 255, 255, 0)  # a transparent layer over white
        Image.fromarray(label, mode).save(src / f"masks/{stem}.png")

    prepare_dataset(src, tmp_path / "out", size=SIZE)

    for stem in ("painted", "layer"):
        prepared = np.asarray(_load(tmp_path / f"out/masks/{stem}.png"))
        assert ((prepared == 255) == window).all(), stem
