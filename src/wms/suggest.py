"""Which unlabelled photos a person should label next: those the model is least sure of, not twice alike.

    wms data suggest --count 20 --out labelling/batch-01             # from the capture inbox
    wms data suggest --count 20 --from photos/ --out labelling/batch-01

Score. Each photo is predicted twice by the model: as it is, and mirrored (left-right; up-down
for a model with flip TTA, whose graph already averages the left-right mirror). With `u` the
uncertainty of the photo's probability map (`wms.uncertainty.assess`, 0 sure … 1 unsure)
and `d = 1 - Dice(mask, mirrored back(mask of the mirrored photo))` the disagreement of the two
opinions, the score is `1 - (1 - u)(1 - d)`: either one alone can raise it, both raise it more.

Choice. `wms.acquisition.select` passes over duplicates and chooses the batch from the ranking
(`--strategy`); `write_batch` writes it, with pre-labels and Label Studio's import file.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import numpy as np
from PIL import Image

from wms.errors import DataError
from wms.inbox import Photo
from wms.train.export import resize_bilinear
from wms.train.preprocess import image_file, image_to_array, open_image, orient_rgb
from wms.train.spec import ModelSpec
from wms.uncertainty import assess

THUMB = 16  # side of the descriptor's thumbnails


class ProbabilityModel(Protocol):
    """A model that gives foreground probabilities (N, 1, S, S) for a uint8 batch (N, 3, S, S)."""

    spec: ModelSpec

    def probabilities(self, batch_uint8: np.ndarray) -> np.ndarray: ...


@dataclass
class Candidate:
    """One scored photo."""

    photo: Photo
    score: float
    uncertainty: dict[str, Any]
    disagreement: float
    foreground: float
    size: tuple[int, int]  # width, height after EXIF orientation
    dhash: int
    descriptor: np.ndarray  # what `diverse` clusters on: grey thumbnail and probability map

    @property
    def name(self) -> str:
        return self.photo.name

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.photo.path.name,
            "score": round(self.score, 6),
            "uncertainty": round(float(self.uncertainty["score"]), 6),
            "flip_disagreement": round(self.disagreement, 6),
            "foreground": round(self.foreground, 6),
            "width": self.size[0],
            "height": self.size[1],
            "sha256": self.photo.sha256,
            "dhash": f"{self.dhash:016x}",
        }


@dataclass
class Selection:
    """The chosen photos, most unsure first, and why the others were passed over
    (`wms.acquisition.select` makes it)."""

    chosen: list[Candidate]
    near_duplicates: list[tuple[Candidate, Candidate, int]]  # candidate, the kept one, distance
    same_bytes: list[tuple[Photo, Photo]]  # photo, the photo with the same bytes kept
    too_unsure: list[Candidate] = field(default_factory=list)  # passed over as the most unsure


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: is each pixel of a 9x8 grey thumbnail brighter than its right neighbour."""
    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int(sum(1 << i for i, bit in enumerate(bits.tolist()) if bit))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; two empty masks agree."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def opinions(model: ProbabilityModel, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Probability maps at the photo's size: of the photo, and of its mirror image mirrored back."""
    size = model.spec.image_size
    axis = 1 if model.spec.tta else 2  # (3, S, S): up-down where the model already averages left-right
    x = image_to_array(image, size)
    probs = np.asarray(model.probabilities(np.stack([x, np.flip(x, axis=axis).copy()])))[:, 0]
    back = np.flip(probs[1], axis=axis - 1)
    return (
        resize_bilinear(probs[0], image.height, image.width),
        resize_bilinear(np.ascontiguousarray(back), image.height, image.width),
    )


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def descriptor(image: Image.Image, prob: np.ndarray) -> np.ndarray:
    """What a photo looks like and where the model sees the window, as 2 x 256 numbers: its grey
    thumbnail (mean removed) and its probability map, both 16x16 and each of unit length."""
    grey = np.asarray(image.convert("L").resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.float32)
    window = Image.fromarray(np.asarray(prob, dtype=np.float32), mode="F").resize(
        (THUMB, THUMB), Image.Resampling.BOX
    )
    return np.concatenate(
        [_unit((grey - grey.mean()).ravel()), _unit(np.asarray(window, dtype=np.float32).ravel())]
    ).astype(np.float32)


def score_photo(model: ProbabilityModel, photo: Photo, image: Image.Image) -> Candidate:
    """Score one decoded photo (RGB, EXIF orientation applied)."""
    prob, mirrored = opinions(model, image)
    threshold = model.spec.threshold
    mask = prob > threshold
    assessment = assess(prob, threshold)
    disagreement = 1.0 - dice(mask, mirrored > threshold)
    score = 1.0 - (1.0 - assessment.score) * (1.0 - disagreement)
    return Candidate(
        photo=photo,
        score=score,
        uncertainty=assessment.to_dict(),
        disagreement=disagreement,
        foreground=float(mask.mean()),
        size=image.size,
        dhash=dhash(image),
        descriptor=descriptor(image, prob),
    )


def open_photo(path: Path) -> Image.Image | None:
    """The photo as RGB after EXIF orientation, or None when it cannot be decoded."""
    try:
        return open_image(path)
    except (DataError, ValueError):  # DataError: whatever Pillow raises for it, named by open_image
        return None


def predicted_mask(model: ProbabilityModel, path: Path) -> np.ndarray:
    """The model's mask of one photo at its size; masks are made again for the few photos chosen
    rather than kept for every photo scored (an inbox of 10,000 photos would hold gigabytes)."""
    image = open_photo(path)
    if image is None:
        raise DataError(f"{path} could be read a moment ago but not now; run the command again")
    size = model.spec.image_size
    prob = np.asarray(model.probabilities(image_to_array(image, size)[None]))[0, 0]
    return np.asarray(resize_bilinear(prob, image.height, image.width) > model.spec.threshold)


def score_photos(
    model: ProbabilityModel,
    photos: Sequence[Photo],
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Candidate], list[Photo]]:
    """Score every photo, best (least sure) first; returns the scored and the unreadable ones."""
    scored, unreadable = [], []
    for photo in photos:
        image = open_photo(photo.path)
        if image is None:
            unreadable.append(photo)
        else:
            scored.append(score_photo(model, photo, image))
        if progress:
            progress(1)
    # Ties (a weak model can be unsure of everything) go to the higher mean pixel entropy.
    scored.sort(key=lambda c: (-c.score, -float(c.uncertainty.get("entropy", 0.0)), c.name))
    return scored, unreadable


def undecided(ranked: Sequence[Candidate]) -> bool:
    """Whether the score ranks none of the photos: every one scores 1, because the model finds no
    window in it or is sure of none of its pixels (an under-confident model whose probabilities
    stay under UNSURE_HIGH scores 1 everywhere, whatever its Dice). The ranking then falls back
    to the mean pixel entropy, and a score-weighted draw is a uniform one."""
    return len(ranked) > 1 and all(c.score >= 1.0 for c in ranked)


def _unique_stems(chosen: Sequence[Candidate]) -> list[str]:
    """Output stems: the photo's own, with -2, -3 ... where two photos share one."""
    seen: dict[str, int] = {}
    stems = []
    for candidate in chosen:
        n = seen[candidate.name] = seen.get(candidate.name, 0) + 1
        stems.append(candidate.name if n == 1 else f"{candidate.name}-{n}")
    return stems


# The formats a batch keeps a photo in as it came, by the suffix its content calls for: every
# browser shows them, so Label Studio does, and a dataset holds them. (A phone's JPEG with extra
# pictures, Pillow's MPO, is decoded as the JPEG it is: wms.sandbox.child.MULTI_PICTURE_JPEG.)
KEPT_AS_THEY_ARE = {"JPEG": ".jpg", "PNG": ".png"}


def write_photo(source: Path, target_stem: Path) -> Path:
    """The photo as the labeller is to see it, so that photo, pre-label and polygons share one pixel
    grid whatever the labelling tool does with EXIF: its bytes where it is a JPEG or PNG that EXIF
    does not turn; else the upright 8-bit pixels a person sees, as JPEG (q95) for a JPEG and PNG for
    the rest (WEBP, BMP, TIFF: Chrome and Firefox show no TIFF, so Label Studio would show nothing)."""
    with image_file(source) as img:
        suffix = KEPT_AS_THEY_ARE.get(str(img.format))
        if suffix is not None and img.getexif().get(0x0112, 1) in (1, None):
            shutil.copyfile(source, target := target_stem.with_suffix(suffix))
            return target
        upright = orient_rgb(img)
    if suffix == ".jpg":
        upright.save(target := target_stem.with_suffix(".jpg"), "JPEG", quality=95)
    else:
        upright.save(target := target_stem.with_suffix(".png"), "PNG")
    return target


def staging_folder(out: Path) -> Path:
    """A fresh hidden folder beside `out`, renamed into place when the batch is complete."""
    staging = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.partial"
    staging.mkdir(parents=True)
    return staging


def write_batch(
    model: ProbabilityModel,
    selection: Selection,
    out: Path,
    model_version: str,
    source: str,
    image_url: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the labelling batch into `out`, all or nothing (staged beside it, renamed at the end).

    images/ the photos; prelabels/ the model's masks, holes filled (PNG 0/255); ranking.csv and ranking.json
    the scores; labelstudio.json the import file with the masks as polygon pre-annotations;
    labelstudio.xml the labelling configuration it matches. `image_url` prefixes each photo's
    file name in the import file (default: Label Studio's local-files URL of `out/images/`).
    """
    from scipy import ndimage

    from wms import labelstudio

    # Percent-encoded, as Label Studio decodes it: a name's `+`, `#`, `&` or `%` would otherwise name
    # another file, or none (a `+` reads as a space, a `#` ends the URL).
    prefix = image_url if image_url is not None else f"/data/local-files/?d={quote(out.name)}/images/"
    staging = staging_folder(out)
    try:
        (staging / "images").mkdir()
        (staging / "prelabels").mkdir()
        rows, tasks = [], []
        for rank, (candidate, stem) in enumerate(
            zip(selection.chosen, _unique_stems(selection.chosen), strict=True), start=1
        ):
            photo = write_photo(candidate.photo.path, staging / "images" / stem)
            # A counter window has no holes, and Label Studio's polygons can draw none: the
            # pre-label is the mask with its holes filled, in the PNG and the polygons alike.
            prelabel = ndimage.binary_fill_holes(predicted_mask(model, candidate.photo.path))
            Image.fromarray(prelabel.astype(np.uint8) * 255, mode="L").save(
                staging / "prelabels" / f"{stem}.png"
            )
            rows.append({"rank": rank, **candidate.row(), "image": f"images/{photo.name}"})
            # Label Studio shows tasks with the lowest prediction score first: give it confidence.
            task = labelstudio.task(prefix + quote(photo.name), prelabel, model_version, 1 - candidate.score)
            task["data"]["name"] = stem
            tasks.append(task)
        _write_csv(staging / "ranking.csv", rows)
        report = {
            "model_version": model_version,
            "source": source,
            "chosen": [
                {**row, "assessment": c.uncertainty} for row, c in zip(rows, selection.chosen, strict=True)
            ],
            "near_duplicates": [
                {"name": c.name, "score": round(c.score, 6), "near": near.name, "distance": d}
                for c, near, d in selection.near_duplicates
            ],
            "same_bytes": [{"name": p.name, "same_as": kept.name} for p, kept in selection.same_bytes],
            "too_unsure": [{"name": c.name, "score": round(c.score, 6)} for c in selection.too_unsure],
            **(extra or {}),
        }
        (staging / "ranking.json").write_text(json.dumps(report, indent=2) + "\n")
        (staging / "labelstudio.json").write_text(json.dumps(tasks, indent=1) + "\n")
        (staging / "labelstudio.xml").write_text(labelstudio.CONFIG_XML)
        if out.is_dir():
            out.rmdir()  # checked empty by the caller; a non-empty one makes rename fail, never merge
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv

    columns = ["rank", "name", "score", "uncertainty", "flip_disagreement", "foreground", "width"]
    columns += ["height", "image", "file", "sha256", "dhash"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
