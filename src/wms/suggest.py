"""Which unlabelled photos a person should label next: those the model is least sure of, not twice alike.

    wms data suggest --count 20 --out labelling/batch-01             # from the capture inbox
    wms data suggest --count 20 --from photos/ --out labelling/batch-01

Score. Each photo is predicted twice by the model: as it is, and mirrored (left-right; up-down
for a model with flip TTA, whose graph already averages the left-right mirror). With `u` the
uncertainty of the photo's probability map (`wms.uncertainty.assess`, 0 sure … 1 unsure)
and `d = 1 - Dice(mask, mirrored back(mask of the mirrored photo))` the disagreement of the two
opinions, the score is `1 - (1 - u)(1 - d)`: either one alone can raise it, both raise it more.

Duplicates. Photos with the same bytes (sha256) count once. Then, going down the ranking, a
photo is passed over when its difference hash (64-bit dHash of a 9x8 grey thumbnail) is within
`min_distance` bits of one kept: a burst of near-identical shots costs one label, not ten.
Identical pixels give identical hashes, so pixel-identical photos are never both chosen.

Choice (`strategy`). `power` (the default) draws the batch at random with odds proportional to
the score (power acquisition, Kirsch et al., "Stochastic batch acquisition", arXiv:2106.12059):
it leans to the unsure photos but keeps the batch as varied as the pool. `top` takes the highest
scores; `diverse` clusters the kept photos into `count` groups by k-means weighted by score
(scikit-learn's KMeans) over a descriptor of each photo (a 16x16 grey thumbnail and the model's
16x16 probability map, each of unit length) and takes the photo nearest each centre (Zhdanov's
diverse mini-batch active learning, arXiv:1901.05954). In benchmarks/active_learning.py, on the
real photos with a weak start model, `power` bought 1.2x the test Dice gain of random photos,
`diverse` 0.8x and `top` less than nothing: a weak model's top scores are mostly the hardest
outliers (steep, far or odd meters), and a batch of only those teaches it little.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wms.errors import DataError
from wms.inbox import Photo
from wms.train.export import resize_bilinear
from wms.train.preprocess import image_to_array
from wms.train.spec import ModelSpec
from wms.uncertainty import assess

DEFAULT_MIN_DISTANCE = 6  # of 64 bits; unrelated photos differ in about 32
STRATEGIES = ("power", "diverse", "top")  # the first is the default
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
    """The chosen photos, best first, and why the others were passed over."""

    chosen: list[Candidate]
    near_duplicates: list[tuple[Candidate, Candidate, int]]  # candidate, chosen one, distance
    same_bytes: list[tuple[Photo, Photo]]  # photo, the photo with the same bytes kept


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: is each pixel of a 9x8 grey thumbnail brighter than its right neighbour."""
    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int(sum(1 << i for i, bit in enumerate(bits.tolist()) if bit))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


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
        with Image.open(path) as img:
            return ImageOps.exif_transpose(img).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
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


def select(
    ranked: Sequence[Candidate],
    count: int,
    min_distance: int = DEFAULT_MIN_DISTANCE,
    strategy: str = STRATEGIES[0],
    seed: int = 0,
) -> Selection:
    """Up to `count` candidates, most unsure first, no two with the same bytes or within
    `min_distance` bits; `strategy` (see the module's doc) decides which of the rest."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    selection = Selection([], [], [])
    kept: dict[str, Photo] = {}
    distinct: list[Candidate] = []
    for candidate in ranked:
        if strategy == "top" and len(distinct) == count:
            break
        same = kept.get(candidate.photo.sha256)
        if same is not None:
            selection.same_bytes.append((candidate.photo, same))
            continue
        kept[candidate.photo.sha256] = candidate.photo
        near = min(distinct, key=lambda c: hamming(c.dhash, candidate.dhash), default=None)
        if near is not None and (distance := hamming(near.dhash, candidate.dhash)) <= max(0, min_distance):
            selection.near_duplicates.append((candidate, near, distance))
            continue
        distinct.append(candidate)
    if strategy == "top" or len(distinct) <= count:
        selection.chosen = distinct[:count]
    elif strategy == "power":
        selection.chosen = _power_sample(distinct, count, seed)
    else:
        selection.chosen = _cluster_centres(distinct, count, seed)
    return selection


def _power_sample(candidates: Sequence[Candidate], count: int, seed: int) -> list[Candidate]:
    """`count` candidates drawn without replacement, each with odds proportional to its score."""
    weights = np.array([max(c.score, 1e-3) for c in candidates])
    picked = np.random.default_rng(seed).choice(
        len(candidates), size=count, replace=False, p=weights / weights.sum()
    )
    return [candidates[i] for i in sorted(picked.tolist())]  # `candidates` is in ranking order


def _cluster_centres(candidates: Sequence[Candidate], count: int, seed: int) -> list[Candidate]:
    """One candidate per cluster of a score-weighted k-means: the one nearest its centre."""
    from sklearn.cluster import KMeans

    points = np.stack([c.descriptor for c in candidates]).astype(np.float64)
    weights = np.array([max(c.score, 1e-3) for c in candidates])
    kmeans = KMeans(n_clusters=count, n_init=3, random_state=seed).fit(points, sample_weight=weights)
    chosen: list[int] = []
    for cluster, centre in enumerate(kmeans.cluster_centers_):
        members = np.flatnonzero(kmeans.labels_ == cluster)
        if members.size:
            nearest = members[np.argmin(((points[members] - centre) ** 2).sum(axis=1))]
            chosen.append(int(nearest))
    # An empty cluster (rare) leaves a place: fill it with the most unsure of the rest.
    taken = set(chosen)
    chosen += [i for i in range(len(candidates)) if i not in taken][: count - len(chosen)]
    return [candidates[i] for i in sorted(chosen)]  # `candidates` is in ranking order


def _unique_stems(chosen: Sequence[Candidate]) -> list[str]:
    """Output stems: the photo's own, with -2, -3 ... where two photos share one."""
    seen: dict[str, int] = {}
    stems = []
    for candidate in chosen:
        n = seen[candidate.name] = seen.get(candidate.name, 0) + 1
        stems.append(candidate.name if n == 1 else f"{candidate.name}-{n}")
    return stems


def write_photo(source: Path, target_stem: Path) -> Path:
    """Copy the photo's bytes, or, where EXIF turns it, write it upright (JPEG q95) so that photo,
    pre-label and polygons share one pixel grid whatever the labelling tool does with EXIF."""
    with Image.open(source) as img:
        turned = img.getexif().get(0x0112, 1) not in (1, None)
        if turned:
            upright = ImageOps.exif_transpose(img).convert("RGB")
    if not turned:
        target = target_stem.with_suffix(source.suffix.lower())
        shutil.copyfile(source, target)
        return target
    target = target_stem.with_suffix(".jpg")
    upright.save(target, "JPEG", quality=95)
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
    source: Path,
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

    prefix = image_url if image_url is not None else f"/data/local-files/?d={out.name}/images/"
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
            task = labelstudio.task(prefix + photo.name, prelabel, model_version, 1 - candidate.score)
            task["data"]["name"] = stem
            tasks.append(task)
        _write_csv(staging / "ranking.csv", rows)
        report = {
            "model_version": model_version,
            "source": str(source),
            "chosen": [
                {**row, "assessment": c.uncertainty} for row, c in zip(rows, selection.chosen, strict=True)
            ],
            "near_duplicates": [
                {"name": c.name, "score": round(c.score, 6), "near": near.name, "distance": d}
                for c, near, d in selection.near_duplicates
            ],
            "same_bytes": [{"name": p.name, "same_as": kept.name} for p, kept in selection.same_bytes],
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
