"""Pair images with their masks: `DIR/images/<stem>.*` goes with `DIR/masks/<stem>.*`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wms.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# The only decoders a pushed file may reach, whatever its name: by its content Pillow would pick
# any of its formats, EPS among them, which runs Ghostscript (`gs`) on the file's PostScript.
DECODERS = ("PNG", "JPEG")

_LAYOUT_HINT = "a dataset folder holds images/ and masks/ with one file per pair sharing its stem"


@dataclass(frozen=True)
class Pair:
    """One image and its mask, matched by file stem."""

    id: str
    image: Path
    mask: Path


@dataclass
class PairScan:
    """Result of pairing a dataset folder: the pairs and the files left without a partner."""

    pairs: list[Pair]
    missing_mask: list[Path] = field(default_factory=list)  # images without a mask
    missing_image: list[Path] = field(default_factory=list)  # masks without an image


def _image_files(folder: Path) -> dict[str, list[Path]]:
    """Map stem -> image files in `folder`, skipping hidden files and other suffixes."""
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        # Hidden files are editor/OS litter (.DS_Store, ._foo.jpg), never data.
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        by_stem.setdefault(path.stem, []).append(path)
    return by_stem


def find_pairs(root: Path, missing_ok: bool = False) -> PairScan:
    """Scan `root/images` and `root/masks` and pair files by stem.

    `missing_ok`: a missing images/ or masks/ holds no files (validation then reports each file
    of the other as lacking its partner) instead of stopping the scan.
    """
    root = Path(root)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(f"dataset folder {root} {what}: {_LAYOUT_HINT}")
    for sub in ("images", "masks"):
        if not (root / sub).is_dir() and not missing_ok:
            raise DataError(f"no {sub}/ folder in {root}: {_LAYOUT_HINT}")
    images = _image_files(root / "images") if (root / "images").is_dir() else {}
    masks = _image_files(root / "masks") if (root / "masks").is_dir() else {}
    for kind, found in (("images", images), ("masks", masks)):
        clashes = sorted(stem for stem, paths in found.items() if len(paths) > 1)
        if clashes:
            # Two files with one stem make the pairing ambiguous; guessing would silently pick one.
            names = ", ".join(p.name for p in found[clashes[0]])
            raise DataError(
                f"{len(clashes)} stem(s) in {root / kind} have more than one file (e.g. {names}): "
                "keep one file per stem"
            )
    pairs = [
        Pair(id=stem, image=images[stem][0], mask=masks[stem][0]) for stem in sorted(images) if stem in masks
    ]
    missing_mask = [images[stem][0] for stem in sorted(images) if stem not in masks]
    missing_image = [masks[stem][0] for stem in sorted(masks) if stem not in images]
    return PairScan(pairs=pairs, missing_mask=missing_mask, missing_image=missing_image)
