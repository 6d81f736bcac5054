"""Dataset validation: one test per issue code, plus report formats and the real data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.conftest import POSTSCRIPT

from wms.data import ValidationReport, synthesize, validate_dataset

SIZE = 32
REAL_DATA = Path(__file__).resolve().parents[3] / "shared/datasets/water-meters"


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "ds"
    ids = synthesize(root, 4, size=SIZE, seed=0)
    return root, ids


def _codes(report: ValidationReport) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for issue in report.issues:
        out.setdefault(issue.code, []).append(issue.path)
    return out


def _mask(size: tuple[int, int], value: int = 255) -> Image.Image:
    arr = np.zeros((size[1], size[0]), dtype=np.uint8)
    arr[2:6, 2:10] = value
    return Image.fromarray(arr, "L")


def test_clean_synth_dataset_is_ok(dataset: tuple[Path, list[str]]) -> None:
    root, _ = dataset
    report = validate_dataset(root, size=SIZE)
    assert report.ok and report.issues == [] and report.pairs == 4
    assert report.stats["image_sizes"] == {f"{SIZE}x{SIZE}": 4}
    fg = report.stats["foreground_fraction"]
    assert 0 < fg["min"] <= fg["mean"] <= fg["max"] < 0.2


def test_missing_mask_and_image(dataset: tuple[Path, list[str]]) -> None:
    root, ids = dataset
    (root / f"masks/{ids[0]}.png").unlink()
    (root / f"images/{ids[1]}.png").unlink()
    report = validate_dataset(root, size=SIZE)
    codes = _codes(report)
    assert codes["missing_mask"] == [f"images/{ids[0]}.png"]
    assert codes["missing_image"] == [f"masks/{ids[1]}.png"]
    assert not report.ok and report.pairs == 2


@pytest.mark.parametrize("defect", ["truncated", "text", "jpeg_named_png"])
def test_unreadable(dataset: tuple[Path, list[str]], defect: str) -> None:
    root, ids = dataset
    path = root / f"images/{ids[2]}.png"
    if defect == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif defect == "text":
        path.write_text("not an image")
    else:
        Image.open(path).convert("RGB").save(path, format="JPEG")
    report = validate_dataset(root, size=SIZE)
    assert _codes(report)["unreadable"] == [f"images/{ids[2]}.png"]
    assert not report.ok and report.pairs == 4


def test_a_phone_jpeg_with_extra_pictures_is_a_valid_photo(dataset: tuple[Path, list[str]]) -> None:
    root, ids = dataset
    path = root / f"images/{ids[1]}.png"
    photo = Image.open(path).convert("RGB")
    photo.save(path.with_suffix(".jpg"), format="MPO", save_all=True, append_images=[photo])  # MPF
    path.unlink()
    report = validate_dataset(root, size=SIZE)
    assert report.ok and report.issues == [], report.issues


def test_wrong_size(dataset: tuple[Path, list[str]]) -> None:
    root, ids = dataset
    Image.new("RGB", (40, 40), (9, 9, 9)).save(root / f"images/{ids[0]}.png")
    _mask((40, 40)).save(root / f"masks/{ids[0]}.png")
    report = validate_dataset(root, size=SIZE)
    codes = _codes(report)
    assert sorted(codes["wrong_size"]) == [f"images/{ids[0]}.png", f"masks/{ids[0]}.png"]
    assert "size_mismatch" not in codes and not report.ok
    assert validate_dataset(root, size=None).ok


def test_a_decompression_bomb_is_wrong_size_without_being_decoded(dataset: tuple[Path, list[str]]) -> None:
    root, ids = dataset
    Image.new("RGB", (13000, 13000)).save(root / f"images/{ids[0]}.png")  # 0.5 MB on disk, 507 MB decoded
    Image.new("L", (13000, 13000)).save(root / f"masks/{ids[0]}.png")
    # A fresh process, so its peak memory (VmHWM: since its exec, unlike ru_maxrss) is this validation's.
    code = (
        "import re, sys; from pathlib import Path; from wms.data import validate_dataset; "
        f"report = validate_dataset(sys.argv[1], size={SIZE}, workers=1); "
        "print(sorted(i.path for i in report.issues if i.code == 'wrong_size')); "
        "print(int(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text())[1]) // 1024)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True)
    wrong, peak_mb = done.stdout.splitlines()
    assert wrong == str([f"images/{ids[0]}.png", f"masks/{ids[0]}.png"])
    assert int(peak_mb) < 200, f"validation held {peak_mb} MB"  # 40 MB of it is Python and imports


def test_size_mismatch(dataset: tuple[Path, list[str]]) -> None:
    root, ids = dataset
    _mask((SIZE, 40)).save(root / f"masks/{ids[1]}.png")
    report = validate_dataset(root, size=None)
    assert _codes(report) == {"size_mismatch": [f"images/{ids[1]}.png"]}
    assert not report.ok


def test_non_binary_png_mask(dataset: tuple[Path, list[str]]) -> None:
    root, ids = dataset
    _mask((SIZE, SIZE), value=128).save(root / f"masks/{ids[0]}.png")
    report = validate_dataset(root, size=SIZE)
    assert _codes(report)["non_binary_mask"] == [f"masks/{ids[0]}.png"]
    assert not report.ok


def test_jpeg_mask_is_non_binary(dataset: tuple[Path, list[str]]) -> None:
    root, ids = dataset
    png = root / f"masks/{ids[3]}.png"
    Image.open(png).save(root / f"masks/{ids[3]}.jpg", quality=90)
    png.unlink()
    report = validate_dataset(root, size=SIZE)
    assert _codes(report)["non_binary_mask"] == [f"masks/{ids[3]}.jpg"]
    assert not report.ok


def test_empty_mask_is_a_warning(dataset: tuple[Path, list[str]]) -> None:
    root, ids = dataset
    Image.new("L", (SIZE, SIZE), 0).save(root / f"masks/{ids[2]}.png")
    report = validate_dataset(root, size=SIZE)
    assert _codes(report) == {"empty_mask": [f"masks/{ids[2]}.png"]}
    assert report.ok and report.warnings and not report.errors
    assert report.stats["foreground_fraction"]["min"] == 0.0


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_rotation_is_applied_before_comparing_sizes(dataset: tuple[Path, list[str]], fmt: str) -> None:
    root, ids = dataset
    suffix = ".png" if fmt == "PNG" else ".jpg"
    (root / f"images/{ids[0]}.png").unlink()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide x 32 high, shown 32 x 40 after a quarter turn
    Image.new("RGB", (40, SIZE), (50, 60, 70)).save(root / f"images/{ids[0]}{suffix}", exif=exif)
    _mask((SIZE, 40)).save(root / f"masks/{ids[0]}.png")
    report = validate_dataset(root, size=None)
    codes = _codes(report)
    assert "size_mismatch" not in codes
    assert codes["exif_rotated"] == [f"images/{ids[0]}{suffix}"]
    assert report.ok
    assert report.stats["image_sizes"][f"{SIZE}x40"] == 1


def test_duplicate_image(dataset: tuple[Path, list[str]]) -> None:
    root, ids = dataset
    shutil.copy(root / f"images/{ids[0]}.png", root / f"images/{ids[3]}.png")
    report = validate_dataset(root, size=SIZE)
    assert _codes(report)["duplicate"] == [f"images/{ids[3]}.png"]
    assert ids[0] in report.issues[0].message and not report.ok


def test_jpeg_photos_decoded_at_a_smaller_scale_still_show_every_cut_and_every_copy(tmp_path: Path) -> None:
    # Validation decodes a JPEG photo at a DCT scale (1/4 here) for its sample and thumbnail:
    # a cut file must still fail whole, and a copy be called what it is.
    root = tmp_path / "ds"
    ids = synthesize(root, 6, size=384, seed=5)
    for i in ids:
        png = root / f"images/{i}.png"
        Image.open(png).save(png.with_suffix(".jpg"), quality=90)
        png.unlink()
    photo = root / f"images/{ids[0]}.jpg"
    cut = photo.read_bytes()
    photo.write_bytes(cut[: len(cut) * 3 // 5])
    for new, made in (("zz-byte-copy", "jpg"), ("zz-saved-as-png", "png")):
        source = root / f"images/{ids[1]}.jpg"
        if made == "jpg":
            shutil.copy(source, root / f"images/{new}.jpg")
        else:
            Image.open(source).save(root / f"images/{new}.png")  # other format, the same pixels
        shutil.copy(root / f"masks/{ids[1]}.png", root / f"masks/{new}.png")

    report = validate_dataset(root, size=384)

    messages = {i.path: i.message for i in report.issues}
    assert _codes(report) == {
        "unreadable": [f"images/{ids[0]}.jpg"],
        "duplicate": ["images/zz-byte-copy.jpg", "images/zz-saved-as-png.png"],
    }
    assert "truncated" in messages[f"images/{ids[0]}.jpg"]
    for copy in ("zz-byte-copy.jpg", "zz-saved-as-png.png"):
        assert messages[f"images/{copy}"].startswith(f"same pixels as images/{ids[1]}.jpg")


@pytest.mark.parametrize("copy", ["re-encoded", "resized"])
def test_a_re_saved_copy_of_a_test_photo_under_a_new_name_is_a_duplicate(tmp_path: Path, copy: str) -> None:
    # A corrected mask pushed with the photo re-saved by the labelling tool, under a new name:
    # the new id hashes into train while the original is in test.
    from wms.data.splits import split_of

    root = tmp_path / "ds"
    ids = synthesize(root, 12, size=128, seed=3)
    original = next(i for i in ids if split_of(i, 0.15, 0.15) == "test")
    again = next(n for k in range(100) if split_of(n := f"{original}-fixed{k}", 0.15, 0.15) == "train")
    photo = Image.open(root / f"images/{original}.png").convert("RGB")
    if copy == "resized":
        photo = photo.resize((100, 100), Image.Resampling.BILINEAR).resize((128, 128))
    photo.save(root / f"images/{again}.jpg", quality=80)
    shutil.copy(root / f"masks/{original}.png", root / f"masks/{again}.png")

    report = validate_dataset(root, size=128)

    assert _codes(report)["duplicate"] == [f"images/{again}.jpg"]
    assert f"images/{original}.png" in report.issues[0].message and not report.ok


@pytest.mark.parametrize("copy", ["saved turned", "saved without its EXIF"])
def test_a_copy_of_a_photo_that_exif_turns_is_a_duplicate_whether_saved_turned_or_not(
    tmp_path: Path, copy: str
) -> None:
    # The original says "turn me" in EXIF; preparation, or a labelling tool, saves the copy turned,
    # and a plain re-save drops the EXIF and keeps the pixels as stored.
    from PIL import ImageOps

    root = tmp_path / "ds"
    ids = synthesize(root, 6, size=160, seed=4)
    original = root / f"images/{ids[2]}.png"
    photo = Image.open(original).convert("RGB").resize((160, 120))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: 120 wide, 160 high
    photo.save(original.with_suffix(".jpg"), quality=95, exif=exif.tobytes())
    original.unlink()
    Image.open(root / f"masks/{ids[2]}.png").resize((120, 160)).save(root / f"masks/{ids[2]}.png")
    again = Image.open(original.with_suffix(".jpg"))
    if copy == "saved turned":
        again = ImageOps.exif_transpose(again)
        assert again.size == (120, 160)
    again.save(root / "images/zz-again.jpg", quality=85)  # no EXIF
    shutil.copy(root / f"masks/{ids[2]}.png", root / "masks/zz-again.png")

    report = validate_dataset(root, size=None)

    assert _codes(report)["duplicate"] == ["images/zz-again.jpg"]
    assert f"the same picture as images/{ids[2]}.jpg" in next(
        i.message for i in report.issues if i.code == "duplicate"
    )


def test_bad_mode_image_and_mask(dataset: tuple[Path, list[str]]) -> None:
    root, ids = dataset
    Image.open(root / f"images/{ids[0]}.png").convert("RGBA").save(root / f"images/{ids[0]}.png")
    Image.open(root / f"masks/{ids[1]}.png").convert("RGB").save(root / f"masks/{ids[1]}.png")
    report = validate_dataset(root, size=SIZE)
    assert sorted(_codes(report)["bad_mode"]) == [f"images/{ids[0]}.png", f"masks/{ids[1]}.png"]
    assert not report.ok


def test_single_channel_mask_modes_accepted(dataset: tuple[Path, list[str]]) -> None:
    root, ids = dataset
    Image.open(root / f"masks/{ids[0]}.png").convert("1").save(root / f"masks/{ids[0]}.png")
    Image.open(root / f"masks/{ids[1]}.png").convert("P").save(root / f"masks/{ids[1]}.png")
    assert validate_dataset(root, size=SIZE).issues == []


def test_report_formats_and_progress(dataset: tuple[Path, list[str]]) -> None:
    root, ids = dataset
    Image.new("L", (SIZE, SIZE), 0).save(root / f"masks/{ids[0]}.png")
    calls: list[int] = []
    report = validate_dataset(root, size=SIZE, progress=lambda: calls.append(1))
    assert len(calls) == 4
    data = report.to_dict()
    assert set(data) == {"ok", "pairs", "issues", "stats"}
    assert set(data["issues"][0]) == {"code", "severity", "path", "message"}
    assert data["stats"]["issue_counts"] == {"empty_mask": 1}
    markdown = report.to_markdown()
    assert "empty_mask" in markdown and "| code |" in markdown


def test_parallel_matches_serial(tmp_path: Path) -> None:
    ids = synthesize(tmp_path, 20, size=SIZE, seed=1)
    Image.new("L", (SIZE, SIZE), 0).save(tmp_path / f"masks/{ids[5]}.png")
    (tmp_path / f"images/{ids[9]}.png").write_text("broken")
    calls: list[int] = []
    parallel = validate_dataset(tmp_path, size=SIZE, workers=2, progress=lambda: calls.append(1))
    serial = validate_dataset(tmp_path, size=SIZE, workers=1)
    assert parallel.to_dict() == serial.to_dict()
    assert len(calls) == 20
    assert set(_codes(parallel)) == {"empty_mask", "unreadable"}


@pytest.mark.realdata
def test_real_data_first_40_pairs(tmp_path: Path) -> None:
    if not (REAL_DATA / "images").is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    images = sorted(p for p in (REAL_DATA / "images").iterdir() if not p.name.startswith("."))[:40]
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    rotated = []
    for image in images:
        shutil.copy(image, tmp_path / "images" / image.name)
        for mask in (REAL_DATA / "masks").glob(f"{image.stem}.*"):
            shutil.copy(mask, tmp_path / "masks" / mask.name)
        if Image.open(image).getexif().get(0x0112, 1) not in (0, 1):
            rotated.append(f"images/{image.name}")
    report = validate_dataset(tmp_path, size=None)
    codes = _codes(report)
    assert report.pairs == 40
    assert "size_mismatch" not in codes, "EXIF orientation must be applied before comparing sizes"
    assert rotated, "expected some EXIF-rotated photos among the first 40"
    assert sorted(codes["exif_rotated"]) == sorted(rotated)
    assert "non_binary_mask" in codes  # masks are JPEG
    assert set(codes) <= {"exif_rotated", "non_binary_mask"}


def test_postscript_named_png_is_refused_without_running_ghostscript(
    dataset: tuple[Path, list[str]], ghostscript: tuple[dict[str, str], Path]
) -> None:
    root, ids = dataset
    (root / f"images/{ids[0]}.png").write_text(POSTSCRIPT)
    env, ran = ghostscript
    code = (
        "import json, sys; from wms.data import validate_dataset; "
        f"report = validate_dataset(sys.argv[1], size={SIZE}, workers=1); "
        "print(json.dumps([(i.code, i.path, i.message) for i in report.issues]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True, env=env
    )
    assert not ran.exists(), f"validation ran gs {ran.read_text()!r}"
    [(code_, path, message)] = json.loads(done.stdout)
    assert (code_, path) == ("unreadable", f"images/{ids[0]}.png") and "neither PNG nor JPEG" in message
