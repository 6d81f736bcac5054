"""What an ingest would add to the store, worked out before anything is written.

The batch's pairs are hashed and given their stable split, then checked against the base
version: names unsafe as paths, ids already stored with other content (a conflict), ids that
differ only in letter case, for a plain ingest a photo already stored under another id, and
corrections of masks that were themselves corrected since (wms.data.corrections).
`DatasetStore.plan` and `DatasetStore.ingest` use it; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wms.data.corrections import check_corrections
from wms.data.hashes import content_version, sha256_file
from wms.data.manifest import corrected_masks, entry_problem, folded
from wms.data.pairs import Pair, find_pairs
from wms.data.splits import split_of
from wms.errors import BatchError, ConflictError, DataError
from wms.train.preprocess import image_header

if TYPE_CHECKING:
    from wms.data.store import DatasetStore


@dataclass
class IngestPlan:
    """An ingest worked out but not yet written."""

    version: str
    parent: str | None
    added: list[str]
    unchanged: list[str]
    pairs: dict[str, Any]  # the merged manifest entries
    sources: dict[str, Path]  # blob sha256 -> local file, for the added pairs
    new_pairs: list[Pair]  # the added and corrected pairs' files
    orphans: list[Path] = field(default_factory=list)  # images without masks and masks without images
    corrected: list[str] = field(default_factory=list)  # stored ids whose mask the batch replaces
    restored: list[str] = field(default_factory=list)  # of those, the ids given an older mask back


def plan_ingest(
    store: DatasetStore,
    folder: Path,
    base: str | None,
    for_validation: bool = False,
    correct: bool = False,
    cut: str | None = None,
    restore: frozenset[str] = frozenset(),
) -> IngestPlan:
    """What ingesting `folder` onto `base` would add; writes nothing. BatchError when `folder`
    cannot be ingested (no pairs, orphans, unsafe names, a conflict with `base`).

    `for_validation`: the pipeline's merge, which validation checks next; files without a
    partner, and images that cannot be read, go on to its report instead of stopping here.
    `correct`: a stored photo, byte for byte, under its id with another mask replaces that mask
    (a conflict otherwise: a folder pulled from an older version would undo corrections since),
    unless that mask was itself corrected since the batch's copy was made (`cut`: the version the
    batch was cut from, when known; see wms.data.corrections); `restore`: the ids whose older
    mask the batch puts back on purpose.
    """
    try:
        scan = find_pairs(folder)
    except DataError as exc:
        raise BatchError(str(exc)) from None
    orphans = scan.missing_mask + scan.missing_image
    if orphans and not for_validation:
        raise BatchError(
            f"{len(orphans)} file(s) in {folder} have no partner "
            f"({', '.join(p.name for p in orphans[:5])}); add the missing image or mask, "
            f"or run `wms data validate {folder}`"
        )
    if not scan.pairs and not orphans:
        raise BatchError(f"no image/mask pairs in {folder}; put them in its images/ and masks/")
    manifest = store.manifest(base) if base else None
    old = manifest["pairs"] if manifest else {}
    entries = {p.id: _entry(p, store.fractions, for_validation) for p in scan.pairs}
    unsafe = next(((i, why) for i, e in entries.items() if (why := entry_problem(i, e))), None)
    if unsafe:
        pid, why = unsafe
        raise BatchError(f"pair {pid!r} in {folder} {why}; rename its files — nothing was written")
    corrected = corrected_masks(old, entries, base, correct)
    restored = check_corrections(store, manifest, entries, corrected, cut, restore) if manifest else []
    added = sorted(set(entries) - set(old))
    fresh = {i: entries[i] for i in added}
    twin = _first_clash(old, fresh, lambda i, _: folded(i))
    if twin:
        first, again = twin
        raise ConflictError(
            f"pair {again!r} in {folder} differs from {first!r} "
            f"(in {f'version {base}' if first in old else folder}) only in letter case: on macOS "
            f"and Windows their files would overwrite each other; rename {again!r} — nothing was written"
        )
    # Validation reports duplicates for the pipeline; a plain ingest has no such report.
    dup = None if for_validation else _first_clash(old, fresh, lambda _, e: e["image"]["sha256"])
    if dup:
        first, again = dup
        raise ConflictError(
            f"pair {again!r} in {folder} has the same image as {first!r} "
            f"(in {f'version {base}' if first in old else folder}): one photo under two names can "
            f"land in train and in test; drop {again!r} — nothing was written"
        )
    # A photo deleted on request (`wms data forget`) does not come back from a batch kept since.
    gone = store.erased_blobs() if added or corrected else set()
    back = next((i for i in added + corrected if entries[i]["image"]["sha256"] in gone), None)
    if back:
        when = (store.erased(entries[back]["image"]["sha256"]) or {}).get("erased_at", "earlier")
        raise ConflictError(
            f"pair {back!r} in {folder} is a photo deleted on request by `wms data forget` ({when}): "
            f"it may not come back; remove it from {folder} — nothing was written"
        )
    by_id = {p.id: p for p in scan.pairs}
    sources: dict[str, Path] = {}
    for pid in entries:  # the unchanged pairs too: their blobs may have been lost since
        sources[entries[pid]["image"]["sha256"]] = by_id[pid].image
        sources[entries[pid]["mask"]["sha256"]] = by_id[pid].mask
    merged = {**old, **fresh} | {i: {**entries[i], "split": old[i]["split"]} for i in corrected}
    version = content_version(merged, base if restored else None) if added or corrected else (base or "")
    unchanged = sorted(set(entries) & set(old) - set(corrected))
    new_pairs = [by_id[i] for i in added + corrected]
    return IngestPlan(
        version, base, added, unchanged, merged, sources, new_pairs, orphans, corrected, restored
    )


def _entry(pair: Pair, fractions: tuple[float, float], for_validation: bool) -> dict[str, Any]:
    """A pair's manifest entry: its files' hashes and names, its split and its size."""
    try:
        size: list[int] | None = list(image_header(pair.image).size)
    except DataError:
        if not for_validation:
            raise  # a file that is no image stops an ingest: nothing is written
        size = None  # validation names it; a version holding it is never stored
    return {
        "image": {"sha256": sha256_file(pair.image), "name": pair.image.name},
        "mask": {"sha256": sha256_file(pair.mask), "name": pair.mask.name},
        "split": split_of(pair.id, *fractions),
        "size": size,
    }


def _first_clash(
    old: dict[str, Any], added: dict[str, Any], key: Callable[[str, Any], str]
) -> tuple[str, str] | None:
    """The first added id whose key another id (in `old`, or added before it) already has: (other, id)."""
    owners = {key(pid, entry): pid for pid, entry in old.items()}
    for pid, entry in added.items():
        other = owners.setdefault(key(pid, entry), pid)
        if other != pid:
            return other, pid
    return None
