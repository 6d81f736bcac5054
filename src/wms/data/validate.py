"""Check a dataset folder before it is prepared or trained on; every bad file becomes an `Issue`.

Issue codes are a contract with the CLI and CI: missing_mask, missing_image, unreadable, wrong_size,
size_mismatch, non_binary_mask, empty_mask, exif_rotated, duplicate, bad_mode, no_pairs.
Issue paths are relative to the dataset root (e.g. "images/a.png").
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import UnidentifiedImageError

from wms.data._pool import parallel_map
from wms.data.issues import Issue, ValidationReport
from wms.data.lookalike import THUMBNAIL_SIDE, near_twins, picture_hashes
from wms.data.pairs import DECODERS, Pair, find_pairs
from wms.errors import UsageError, WmsError
from wms.sandbox.images import BrokenImage, Summary, TooManyPixels, pixel_digest, summarize_file

WARNING_CODES = frozenset({"empty_mask", "exif_rotated"})
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
# EXIF orientations 5-8 turn the picture by 90 degrees, so width and height swap; 0 is invalid and ignored.
_ORIENTATIONS = range(2, 9)
_SWAPS_AXES = frozenset({5, 6, 7, 8})
# Duplicate fingerprints sample one pixel in this many along each axis (1/64 of a ~1 MP photo).
_SAMPLE_STEP = 8


@dataclass
class _PairResult:
    """What a worker learns about one pair; small, so it pickles cheaply."""

    issues: list[Issue] = field(default_factory=list)
    image_size: str | None = None
    foreground: float | None = None
    image_hash: str | None = None
    picture_hashes: tuple[int, ...] = ()


def _issue(code: str, path: str, message: str) -> Issue:
    return Issue(
        code=code, severity="warning" if code in WARNING_CODES else "error", path=path, message=message
    )


def _open(
    path: Path, rel: str, result: _PairResult, size: int | None = None, what: str = "image"
) -> Summary | None:
    """Fully decode a file and sum it up (`wms.sandbox.images.summarize_file`: its orientation,
    histogram, a sample and a thumbnail), or record why it cannot be used.

    With a size contract, a file whose header gives more pixels than it allows is not decoded: it
    is wrong_size whatever its pixels, and a 13000x13000 PNG of 0.5 MB decodes to 0.5 GB (Pillow
    refuses only from 179 million pixels) in each worker, on the runner that also serves.
    """
    try:
        img = summarize_file(
            path,
            DECODERS,
            max_pixels=size * size if size is not None else None,
            histogram=what == "mask",  # the mask checks
            sample_step=_SAMPLE_STEP if what == "image" else None,  # the exact duplicate check
            thumbnail_side=THUMBNAIL_SIDE if what == "image" else None,  # the lookalike check
            draft=what == "image",  # a JPEG photo at a third of the cost: see `_fingerprint`
        )
    except TooManyPixels as exc:
        w, h = exc.size
        message = f"{what} is {w}x{h}, expected {size}x{size}: run prepare to resize the dataset"
        result.issues.append(_issue("wrong_size", rel, message))
        return None
    except UnidentifiedImageError:
        message = "content is neither PNG nor JPEG: save it as the PNG or JPEG its extension says"
        result.issues.append(_issue("unreadable", rel, message))
        return None
    except WmsError:  # the decoder itself cannot run as the settings ask: not this file's fault
        raise
    except Exception as exc:  # any decoder failure is a property of the file, not a bug here
        why = str(exc) if isinstance(exc, BrokenImage) else f"{type(exc).__name__}: {exc}"
        result.issues.append(
            _issue("unreadable", rel, f"cannot decode ({why}): re-export or remove the file")
        )
        return None
    expected = _FORMATS.get(path.suffix.lower())
    if img.format != expected:
        result.issues.append(
            _issue(
                "unreadable",
                rel,
                f"content is {img.format} but the extension says {expected}: "
                "convert the file or rename it to match",
            )
        )
        return None
    return img


def _oriented_size(img: Summary) -> tuple[int, int]:
    """Size after applying EXIF orientation, as `ImageOps.exif_transpose` would produce it."""
    w, h = img.size
    return (h, w) if img.orientation in _SWAPS_AXES else (w, h)


def _mask_histogram(mask: Summary) -> list[int] | None:
    """Pixel count per gray value 0-255 of a single-channel mask, or None when it is not one."""
    # A histogram is computed in C in one pass and answers every mask check; a numpy copy of the
    # pixels plus three array passes cost several times more on 1-megapixel masks.
    assert mask.histogram is not None  # `_open` asks for a mask's
    if mask.mode in ("L", "1"):
        return mask.histogram
    if mask.mode == "P":
        palette = mask.palette or []
        counts = mask.histogram
        gray = [0] * 256
        for index, count in enumerate(counts):
            if not count:
                continue
            if 3 * index + 2 >= len(palette):
                return None
            r, g, b = palette[3 * index : 3 * index + 3]
            if not r == g == b:
                return None
            gray[r] += count
        return gray
    return None


def _fingerprint(image: Summary) -> str:
    """Cheap key that copies of one file share; `_same_pixels` settles the rare collisions."""
    # Hashing every decoded byte cost more than decoding a JPEG; a fixed nearest-neighbour sample
    # (one pixel in _SAMPLE_STEP along each axis) is a function of the pixels alone. A JPEG photo
    # is sampled from its draft (decoded at 1/2 to 1/8 scale), so two JPEGs of one picture with
    # the same coefficients collide, and so do two PNGs of the same pixels; a PNG saved from a
    # JPEG's pixels does not, and the lookalike check calls it the same picture instead.
    assert image.sample is not None  # `_open` asks for a photo's
    head = f"{image.mode}{image.size}".encode()
    return hashlib.blake2b(head + image.sample.tobytes(), digest_size=16).hexdigest()


def _same_pixels(a: Path, b: Path) -> bool:
    """Whether two readable images decode to identical pixels (same mode and size)."""
    return pixel_digest(a, DECODERS) == pixel_digest(b, DECODERS)


def _check_pair(pair: Pair, root: Path, size: int | None) -> _PairResult:
    """Check one pair; module-level so worker processes can run it."""
    result = _PairResult()
    img_rel = pair.image.relative_to(root).as_posix()
    mask_rel = pair.mask.relative_to(root).as_posix()
    image = _open(pair.image, img_rel, result, size, "image")
    mask = _open(pair.mask, mask_rel, result, size, "mask")
    sizes: dict[str, tuple[int, int]] = {}
    for rel, opened, what in ((img_rel, image, "image"), (mask_rel, mask, "mask")):
        if opened is None:
            continue
        sizes[what] = _oriented_size(opened)
        orientation = opened.orientation
        if orientation in _ORIENTATIONS:
            result.issues.append(
                _issue(
                    "exif_rotated",
                    rel,
                    f"EXIF orientation {orientation}: sizes were compared after applying it; "
                    "preparation bakes it into the pixels, nothing to do unless the result looks wrong",
                )
            )
        if size is not None and sizes[what] != (size, size):
            w, h = sizes[what]
            result.issues.append(
                _issue(
                    "wrong_size",
                    rel,
                    f"{what} is {w}x{h}, expected {size}x{size}: run prepare to resize the dataset",
                )
            )
    if image is not None:
        result.image_size = "{}x{}".format(*sizes["image"])
        if image.mode not in ("RGB", "L"):
            result.issues.append(
                _issue(
                    "bad_mode",
                    img_rel,
                    f"image mode is {image.mode}, expected RGB or L: convert it to RGB",
                )
            )
        assert image.thumbnail is not None  # `_open` asks for a photo's
        result.image_hash = _fingerprint(image)
        result.picture_hashes = picture_hashes(image.thumbnail, image.orientation)
    if mask is not None:
        histogram = _mask_histogram(mask)
        if histogram is None:
            result.issues.append(
                _issue(
                    "bad_mode",
                    mask_rel,
                    f"mask mode is {mask.mode}, expected single-channel L, 1 or gray P: "
                    "save it as 8-bit grayscale",
                )
            )
        else:
            _check_mask_histogram(histogram, mask_rel, result)
    if "image" in sizes and "mask" in sizes and sizes["image"] != sizes["mask"]:
        (iw, ih), (mw, mh) = sizes["image"], sizes["mask"]
        result.issues.append(
            _issue(
                "size_mismatch",
                img_rel,
                f"image is {iw}x{ih} but its mask {mask_rel} is {mw}x{mh} (after EXIF orientation): "
                "re-export the mask at the image's size",
            )
        )
    return result


def _check_mask_histogram(histogram: list[int], rel: str, result: _PairResult) -> None:
    total = sum(histogram)
    foreground = sum(histogram[128:])  # the same > 127 threshold prepare and training use
    result.foreground = foreground / total if total else 0.0
    odd = total - histogram[0] - histogram[255]
    if odd:
        result.issues.append(
            _issue(
                "non_binary_mask",
                rel,
                f"{odd / total:.1%} of pixels are neither 0 nor 255 (a JPEG mask?): "
                "save masks as PNG with 0/255, or run prepare, which thresholds at 127",
            )
        )
    if not foreground:
        result.issues.append(
            _issue(
                "empty_mask",
                rel,
                "no foreground pixel (>127): check the label, or remove the pair if the "
                "image shows no counter window",
            )
        )


def _check_all(pairs: list[Pair], root: Path, size: int | None, workers: int | None) -> Iterator[_PairResult]:
    return parallel_map(partial(_check_pair, root=root, size=size), pairs, workers)


def _find_duplicate(pair: Pair, seen: list[Pair]) -> Pair | None:
    """The earlier pair whose image has exactly `pair`'s pixels; else remember `pair` and return None."""
    for other in seen:
        if _same_pixels(other.image, pair.image):
            return other
    seen.append(pair)
    return None


def _same_pixels_issue(pair: Pair, original: Pair, root: Path) -> Issue:
    return _issue(
        "duplicate",
        pair.image.relative_to(root).as_posix(),
        f"same pixels as {original.image.relative_to(root).as_posix()}: remove one of the two pairs",
    )


def _lookalikes(pictures: list[tuple[Pair, tuple[int, ...]]], exact: set[str], root: Path) -> list[Issue]:
    """A `duplicate` for each photo that is another's picture in other bytes (re-encoded, resized);
    one whose pixels turn out the same (a PNG saved from a JPEG's, which `_fingerprint` does not
    pair) is called what it is."""
    issues = []
    for first, later in near_twins([h for _, h in pictures]):
        original, pair = pictures[first][0], pictures[later][0]
        if pair.id in exact:
            continue
        if _same_pixels(original.image, pair.image):
            issues.append(_same_pixels_issue(pair, original, root))
            continue
        issues.append(
            _issue(
                "duplicate",
                pair.image.relative_to(root).as_posix(),
                f"the same picture as {original.image.relative_to(root).as_posix()} (re-encoded or "
                "resized): under two names one photo can be trained on and tested on; remove one of the "
                "two pairs",
            )
        )
    return issues


def validate_dataset(
    root: Path,
    size: int | None = 512,
    progress: Callable[[], None] | None = None,
    workers: int | None = None,
    expect: Callable[[int], None] | None = None,
) -> ValidationReport:
    """Check every pair in `root` (images/ + masks/); `size=None` skips the size contract.

    `expect` is told how many pairs will be checked, before the first; `progress` after each."""
    if size is not None and size < 1:
        raise UsageError(f"size must be a positive number of pixels or None, got {size}")
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers}")
    root = Path(root)
    scan = find_pairs(root, missing_ok=True)  # a batch without masks/ is invalid data, reported as such
    if expect is not None:
        expect(len(scan.pairs))
    issues: list[Issue] = []
    for path in scan.missing_mask:
        issues.append(
            _issue(
                "missing_mask",
                path.relative_to(root).as_posix(),
                f"no mask with stem {path.stem!r} in masks/: add the mask or remove the image",
            )
        )
    for path in scan.missing_image:
        issues.append(
            _issue(
                "missing_image",
                path.relative_to(root).as_posix(),
                f"no image with stem {path.stem!r} in images/: add the image or remove the mask",
            )
        )
    if not scan.pairs and not issues:  # an empty folder, or a wrong one, is not a valid dataset
        issues.append(
            _issue("no_pairs", ".", "no pairs in images/ and masks/: add photos and their masks (same stem)")
        )
    sizes: Counter[str] = Counter()
    foreground: list[float] = []
    by_hash: dict[str, list[Pair]] = {}
    exact: set[str] = set()
    pictures: list[tuple[Pair, tuple[int, ...]]] = []
    for pair, result in zip(scan.pairs, _check_all(scan.pairs, root, size, workers), strict=True):
        issues.extend(result.issues)
        if result.image_size is not None:
            sizes[result.image_size] += 1
        if result.foreground is not None:
            foreground.append(result.foreground)
        if result.picture_hashes:
            pictures.append((pair, result.picture_hashes))
        if result.image_hash is not None:
            original = _find_duplicate(pair, by_hash.setdefault(result.image_hash, []))
            if original is not None:
                exact.add(pair.id)
                issues.append(_same_pixels_issue(pair, original, root))
        if progress is not None:
            progress()
    issues.extend(_lookalikes(pictures, exact, root))
    stats: dict[str, Any] = {
        "pairs": len(scan.pairs),
        "image_sizes": dict(sorted(sizes.items())),
        "foreground_fraction": {
            "min": min(foreground) if foreground else None,
            "mean": float(np.mean(foreground)) if foreground else None,
            "max": max(foreground) if foreground else None,
        },
        "issue_counts": dict(sorted(Counter(i.code for i in issues).items())),
    }
    ok = not any(i.severity == "error" for i in issues)
    return ValidationReport(ok=ok, pairs=len(scan.pairs), issues=issues, stats=stats)
