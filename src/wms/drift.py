"""Have the photos the service gets drifted from the photos its model was trained on?

    wms monitor drift                              # the inbox against production's training photos
    wms monitor drift --since 2025-06-01 --out .wms/drift/june

Reference: a seeded sample (monitor.reference_photos) of the train split of the dataset
version the production model was trained on (its registry record; else data/dataset.json).
Captured: the photos in the capture inbox (serve.capture_dir), since `--since`.

Per photo: brightness and contrast (mean and standard deviation of grey, 0-1), width,
height and aspect (width / height, after EXIF orientation), and, with the production model,
the predicted foreground fraction and the uncertainty score (`wms.uncertainty`); the same
model for both sides, so a change is the photos', not the model's.

Per feature, the population stability index PSI = sum_i (q_i - p_i) ln(q_i / p_i) over
bins cut at the reference's quantiles (p: reference shares, q: captured shares, each at
least 1e-4 so an empty bin stays finite). PSI is biased upwards by about (bins - 1) / n for
n photos, so the bins are fewer for small samples (one per 40 photos of the smaller side,
2 to 10). Over monitor.psi_threshold (0.2, the usual rule of thumb) the feature has drifted,
if at least monitor.min_photos were captured. A feature with a single reference value
(training photos are prepared to 512x512, so their width, height and aspect are constant)
is shown, never flagged: there is no distribution to compare against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from wms.errors import DataError
from wms.inbox import Photo, scan_photos
from wms.sandbox.images import decode_bytes
from wms.suggest import ProbabilityModel, open_photo
from wms.train.export import resize_bilinear
from wms.train.preprocess import PHOTO_FORMATS, UNREADABLE, image_to_array, orient_rgb
from wms.uncertainty import assess

if TYPE_CHECKING:
    from wms.config import Project

FEATURES = ("brightness", "contrast", "width", "height", "aspect", "foreground", "uncertainty")
EPSILON = 1e-4
MAX_BINS = 10
PHOTOS_PER_BIN = 40


def photo_features(model: ProbabilityModel, image: Image.Image) -> dict[str, float]:
    """The features of one photo (RGB, EXIF orientation applied)."""
    small = image.copy()
    small.thumbnail((256, 256))  # brightness and contrast do not need every pixel
    grey = np.asarray(small.convert("L"), dtype=np.float64) / 255
    batch = image_to_array(image, model.spec.image_size)[None]
    prob = resize_bilinear(np.asarray(model.probabilities(batch))[0, 0], image.height, image.width)
    threshold = model.spec.threshold
    return {
        "brightness": float(grey.mean()),
        "contrast": float(grey.std()),
        "width": float(image.width),
        "height": float(image.height),
        "aspect": image.width / image.height,
        "foreground": float((prob > threshold).mean()),
        "uncertainty": assess(prob, threshold).score,
    }


def psi(reference: Sequence[float], captured: Sequence[float], bins: int) -> float:
    """Population stability index of `captured` against `reference`, bins at the reference's quantiles."""
    ref, cap = np.asarray(reference, dtype=float), np.asarray(captured, dtype=float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    p = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=len(edges) + 1) / len(ref)
    q = np.bincount(np.searchsorted(edges, cap, side="left"), minlength=len(edges) + 1) / len(cap)
    p, q = np.maximum(p, EPSILON), np.maximum(q, EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def bins_for(n_reference: int, n_captured: int) -> int:
    """Fewer bins for fewer photos: PSI's upward bias grows as (bins - 1) / n."""
    return int(np.clip(min(n_reference, n_captured) // PHOTOS_PER_BIN, 2, MAX_BINS))


def _summary(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    p10, p50, p90 = np.quantile(v, [0.1, 0.5, 0.9])
    return {"n": len(v), "mean": round(float(v.mean()), 6), "p10": round(float(p10), 6)} | {
        "p50": round(float(p50), 6),
        "p90": round(float(p90), 6),
    }


@dataclass
class FeatureDrift:
    """One feature's comparison."""

    feature: str
    psi: float
    bins: int
    flagged: bool
    comparable: bool
    reference: dict[str, float]
    captured: dict[str, float]
    note: str = ""
    # drifted, stable, or why neither can be said: "not compared" (one reference value) or
    # "too few photos" (fewer captured than monitor.min_photos)
    status: str = "stable"


@dataclass
class DriftReport:
    """Every feature's comparison, and what was compared."""

    model_version: str
    reference_source: str
    captured_source: str
    since: str | None
    threshold: float
    min_photos: int
    features: list[FeatureDrift]
    values: dict[str, dict[str, list[float]]] = field(repr=False)  # side -> feature -> values
    skipped: dict[str, int] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def flagged(self) -> list[str]:
        return [f.feature for f in self.features if f.flagged]

    @property
    def captured(self) -> int:
        return int(self.features[0].captured["n"]) if self.features else 0

    @property
    def too_few(self) -> bool:
        """Fewer captured photos than monitor.min_photos: nothing can be flagged."""
        return self.captured < self.min_photos

    @property
    def verdict(self) -> str:
        """One line: which features drifted, or whether too few photos were captured to say."""
        if self.flagged:
            return f"drift in {', '.join(self.flagged)}"
        if self.too_few:
            return (
                f"too few photos to call drift: {self.captured} captured, "
                f"monitor.min_photos is {self.min_photos}"
            )
        return "no drift"

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body.pop("values")
        return {**body, "flagged": self.flagged}


def compare(
    reference: dict[str, list[float]], captured: dict[str, list[float]], threshold: float, min_photos: int
) -> list[FeatureDrift]:
    """PSI of every feature, flagged where it is over `threshold` and the comparison means something;
    none without captured photos."""
    n_ref, n_cap = len(reference[FEATURES[0]]), len(captured[FEATURES[0]])
    if n_cap == 0:
        return []
    bins = bins_for(n_ref, n_cap)
    drifts = []
    for name in FEATURES:
        value = psi(reference[name], captured[name], bins)
        comparable = len(set(reference[name])) > 1
        flagged = comparable and n_cap >= min_photos and value > threshold
        note, status = "", "drifted" if flagged else "stable"
        if not comparable:
            note = f"every reference photo has {name} {reference[name][0]:g}: shown, never flagged"
            status = "not compared"
        elif n_cap < min_photos:
            note = f"only {n_cap} captured photo(s), fewer than monitor.min_photos ({min_photos})"
            status = "too few photos"
        drifts.append(
            FeatureDrift(
                feature=name,
                psi=round(value, 6),
                bins=bins,
                flagged=flagged,
                comparable=comparable,
                reference=_summary(reference[name]),
                captured=_summary(captured[name]),
                note=note,
                status=status,
            )
        )
    return drifts


def features_of(
    model: ProbabilityModel,
    images: Sequence[Callable[[], Image.Image | None]],
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, list[float]], int]:
    """Feature values of the photos each loader opens; returns them and how many could not be read."""
    values: dict[str, list[float]] = {name: [] for name in FEATURES}
    unreadable = 0
    for load in images:
        image = load()
        if image is None:
            unreadable += 1
        else:
            for name, value in photo_features(model, image).items():
                values[name].append(value)
        if progress:
            progress(1)
    return values, unreadable


def captured_photos(inbox: Path, since: datetime | None, source: str = "") -> tuple[list[Photo], str]:
    """The inbox's photos captured at or after `since` (none in a quiet window), and a line saying
    what was read (from `source`, where `inbox` is a copy of it)."""
    scan = scan_photos(inbox, source)
    photos = [p for p in scan.photos if since is None or p.time >= since]
    line = scan.summary()
    if since is not None:
        line += f", {len(photos)} since {since.isoformat()}"
    return photos, line


def sample_ids(ids: Sequence[str], n: int, seed: int) -> list[str]:
    """A seeded sample of `n` ids (all of them when there are fewer), in sorted order."""
    pool = sorted(ids)
    if len(pool) <= n:
        return pool
    picked = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return [pool[i] for i in sorted(picked.tolist())]


def blob_loader(read: Callable[[], bytes]) -> Callable[[], Image.Image | None]:
    """A loader of a photo held as bytes (a store blob)."""

    def load() -> Image.Image | None:
        try:
            return orient_rgb(decode_bytes(read(), PHOTO_FORMATS))  # in wms.sandbox's child
        except (*UNREADABLE, ValueError):
            return None

    return load


def file_loader(path: Path) -> Callable[[], Image.Image | None]:
    return lambda: open_photo(path)


def training_reference(
    project: Project, dataset_version: str, sample: int, seed: int
) -> tuple[list[Callable[[], Image.Image | None]], str]:
    """Loaders of a seeded sample of the train split of `dataset_version` (else data/dataset.json's)."""
    from wms.data.manifest import VERSION_ID
    from wms.data.pointer import read_pointer
    from wms.data.store import open_store

    version, where = dataset_version, "the model's registry record"
    if not VERSION_ID.fullmatch(version):
        pointer_file = project.settings.data.pointer
        pointer = read_pointer(project.path(pointer_file))
        if pointer is None:
            raise DataError(
                f"the model records no dataset version ({version or 'none'}) and {pointer_file} names "
                "none, so its training photos are unknown; pass --reference DIR (a dataset folder)"
            )
        version, where = str(pointer["version"]), str(pointer_file)
    store = open_store(project)
    try:
        pairs = store.manifest(version)["pairs"]
    except DataError as exc:  # e.g. a store other than the one the model was trained from
        raise DataError(f"{exc}; or pass --reference DIR (a dataset folder) to compare with") from None
    train = [pid for pid, entry in pairs.items() if entry["split"] == "train"]
    # A photo erased since (`wms data forget`) is left out; one the store lost is not hidden.
    gone = store.erased_blobs()
    erased = [pid for pid in train if pairs[pid]["image"]["sha256"] in gone]
    train = [pid for pid in train if pid not in erased]
    if not train:
        raise DataError(f"dataset version {version} has no training photos; pass --reference DIR")
    ids = sample_ids(train, sample, seed)
    loaders = [blob_loader(partial(store.read_blob, pairs[i]["image"]["sha256"])) for i in ids]
    return loaders, (
        f"{len(ids)} of the {len(train)} training photos of dataset version {version} "
        f"(from {where}) in {store.url}" + (f", {len(erased)} erased since left out" if erased else "")
    )


def folder_reference(
    folder: Path, sample: int, seed: int
) -> tuple[list[Callable[[], Image.Image | None]], str]:
    """Loaders of a seeded sample of a folder's photos: its train split where it records splits."""
    from wms.data.splits import read_splits

    scan = scan_photos(folder)
    splits = read_splits(scan.folder.parent if scan.folder.name == "images" else scan.folder)
    photos = {p.name: p for p in scan.photos if splits is None or splits.get(p.name) == "train"}
    if not photos:
        raise DataError(f"no reference photos: {scan.summary()}; name a dataset folder with photos")
    ids = sample_ids(list(photos), sample, seed)
    which = "training photos" if splits is not None else "photos"
    return [file_loader(photos[i].path) for i in ids], f"{len(ids)} of the {len(photos)} {which} in {folder}"
