"""The pipeline's data stages: incoming pairs merged onto a stored version in a work folder, validated.

Nothing reaches the store here: the merged folder is validated first, and only a valid one
becomes a version (`DatasetStore.ingest`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from wms.data.plan import IngestPlan
from wms.data.prepare import prepare_dataset
from wms.data.splits import write_splits
from wms.data.store import DatasetStore
from wms.data.validate import Issue, ValidationReport, validate_dataset
from wms.errors import BatchError, DataError
from wms.words import first_few


def prepare_incoming(new_data: Path, out: Path, size: int) -> Path:
    """Raw photos to the training contract (EXIF applied, size x size, binary masks).

    `out` belongs to the run: a resumed run prepares again over what its first try left there.
    """
    report = prepare_dataset(new_data, out, size=size, overwrite=True)
    if report.skipped:
        first = report.skipped[0]
        raise BatchError(
            f"{len(report.skipped)} file(s) in {new_data} could not be prepared "
            f"(first: {first.path}: {first.reason}); fix or remove them and run again"
        )
    return report.out


def validate_incoming(new_data: Path, size: int, auto_prepare: bool) -> ValidationReport:
    """A batch of new pairs checked as the pipeline takes it in: with `auto_prepare`, prepared first.

    Raw photos (any size, EXIF-rotated, JPEG masks) are what `data.auto_prepare` is for, so
    only what preparing cannot mend is reported, with the raw file's path where it was the cause.
    """
    if not auto_prepare:
        return validate_dataset(new_data, size=size)
    with tempfile.TemporaryDirectory(prefix="wms-incoming-") as tmp:
        prepared = prepare_dataset(new_data, Path(tmp) / "prepared", size=size)
        skipped = [Issue(s.code, "error", s.path, s.reason) for s in prepared.skipped]
        # With no pair prepared, the raw folder says why (no_pairs) unless the skips do.
        report = validate_dataset(prepared.out if prepared.written else new_data, size=size)
    issues = skipped + report.issues if prepared.written or not skipped else skipped
    ok = not any(issue.severity == "error" for issue in issues)
    return ValidationReport(ok=ok, pairs=report.pairs, issues=issues, stats=report.stats)


def restore(store: DatasetStore, version: str, work: Path) -> Path:
    """A stored version in the work folder (only missing files are copied, leftovers removed)."""
    pulled = store.pull(version, work)
    for leftover in pulled.extra:  # files of an earlier run that was not kept
        Path(leftover).unlink()
    return work


def merge_into(store: DatasetStore, work: Path, base: str | None, plan: IngestPlan) -> Path:
    """The base version plus the plan's new and corrected pairs (and orphans, for validation to
    report) in `work`."""
    if base:
        restore(store, base, work)
    else:
        shutil.rmtree(work, ignore_errors=True)
        for kind in ("images", "masks"):
            (work / kind).mkdir(parents=True)
    corrected = set(plan.corrected)
    for path in [*(work / "images").iterdir(), *(work / "masks").iterdir()] if corrected else []:
        if path.stem in corrected:  # the stored file, maybe under another extension than the new one
            path.unlink()
    for pair in plan.new_pairs:
        shutil.copy2(pair.image, work / "images" / pair.image.name)
        shutil.copy2(pair.mask, work / "masks" / pair.mask.name)
    for orphan in plan.orphans:
        shutil.copy2(orphan, work / orphan.parent.name / orphan.name)
    write_splits(work, plan.version, plan.pairs)  # the splits the new version records, read by training
    return work


def corrections(ids: list[str]) -> str:
    """The run summary's words for the stored pairs whose mask the batch corrects."""
    return f"the batch corrects the masks of stored pairs: {first_few(ids, 10)}"


def batch_files(plan: IngestPlan) -> set[str]:
    """The files the batch brought into the merged folder, as validation's issues name them."""
    files = {f"{kind}s/{getattr(pair, kind).name}" for pair in plan.new_pairs for kind in ("image", "mask")}
    return files | {f"{orphan.parent.name}/{orphan.name}" for orphan in plan.orphans}


def check_test_split(plan: IngestPlan, test_fraction: float, min_images: int = 1) -> None:
    """BatchError when fewer than `min_images` (gate.min_images) pairs of the merged dataset fall in
    the test split (a first small batch): the gate would refuse any model judged on them, so compute
    is not started to find that out, and a retry would start it again."""
    tested = sum(entry["split"] == "test" for entry in plan.pairs.values())
    if tested == 0:
        raise BatchError(
            f"none of the {len(plan.pairs)} pairs of the merged dataset falls in the test split "
            f"(data.test_fraction = {test_fraction:g}, by a hash of each id), so no "
            "model can be judged on it; push these pairs again with more — nothing was stored"
        )
    if tested < min_images:
        raise BatchError(
            f"only {tested} of the {len(plan.pairs)} pairs of the merged dataset fall in the test split "
            f"(data.test_fraction = {test_fraction:g}, by a hash of each id), fewer than gate.min_images "
            f"= {min_images}, so the gate could promote no model trained on it; push these pairs again "
            "with more — nothing was stored, no compute started"
        )


def validate_merged(
    dataset: Path, size: int, report_dir: Path, new_files: set[str], base: str | None = None
) -> str:
    """Validate the merged folder, writing validation.json/.md; the outcome when valid.

    Errors in the batch's own files (`new_files`) are BatchError, the batch's fault. Errors only
    in pairs the base version already holds are a DataError that says so: stored data that
    passed when it was stored fails today's check (data.size changed since, or a stricter
    check), and no batch can fix that.
    """
    report = validate_dataset(dataset, size=size)
    (report_dir / "validation.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    (report_dir / "validation.md").write_text(report.to_markdown())
    if report.ok:
        return f"{report.pairs} pairs valid, {len(report.warnings)} warning(s)"
    codes = sorted({i.code for i in report.errors})
    where = f"report: {report_dir / 'validation.md'}"
    # A duplicate names the other file of the two in its message.
    ours = [i for i in report.errors if i.path in new_files or any(f in i.message for f in new_files)]
    if ours or base is None:
        raise BatchError(
            f"validation failed: {len(report.errors)} error(s) ({', '.join(codes)}); "
            f"fix the new data and run again — {where}"
        )
    other = ", ".join(s for s in report.stats["image_sizes"] if s != f"{size}x{size}")
    why = (
        f"they are {other} px and data.size is {size}: it was changed since they were stored; set it "
        "back (data.size is the stored dataset's contract; train.image_size sets the size models train at)"
        if "wrong_size" in codes
        else "they passed the checks of the wms that stored them and fail this one's (the report names "
        "them); no batch can pass until the stored version is fixed"
    )
    raise DataError(
        f"validation failed on {len(report.errors)} file(s) already in dataset version {base}, none "
        f"from this batch ({', '.join(codes)}): {why}; then run the batch again — {where}"
    )
