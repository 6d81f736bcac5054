"""Corrections of stored masks that would undo a correction made since: refused before anything is written.

A batch corrects a stored pair's mask by sending the stored photo, byte for byte, with another
mask. A folder taken from an older version looks just the same once someone has corrected the
pair since: a labeller's `data/incoming/` that still holds a batch main took in by a squash
merge (`git pull` keeps those files), a folder pulled from an older version, a data branch cut
from main before another labeller's fix. Taken as a correction, it would put the old mask back
without a word. So a correction is refused when

- the batch's mask is one the pair held in an earlier version of the base's line (its parents)
  and that was replaced since: the batch carries an old copy, not a fix; or
- the version the batch was cut from (main's data/dataset.json where its data branch left main)
  holds the pair with another mask than the base does: the mask was corrected after the branch
  was cut, so the batch's mask was made without that fix.

A batch whose base is unknown (a folder, not a data branch) is held to the first rule only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wms.errors import ConflictError, VersionNotFound

if TYPE_CHECKING:
    from wms.data.store import DatasetStore

SHOWN = 5  # pairs named in the refusal


def check_corrections(
    store: DatasetStore,
    base: dict[str, Any],
    batch: dict[str, Any],
    corrected: list[str],
    cut: str | None = None,
) -> None:
    """ConflictError naming the `corrected` ids whose stored mask in `base` (a manifest) was
    itself corrected since the batch's copy was made; `batch`: the batch's manifest entries,
    `cut`: the version the batch was cut from, when known."""
    if not corrected:
        return
    version = base["version"]
    earlier = _earlier_masks(store, base, corrected)
    at_cut = _pairs_of(store, cut) if cut and cut != version else {}
    stale = []
    for pid in corrected:
        held_in = earlier[pid].get(batch[pid]["mask"]["sha256"])
        if held_in:
            stale.append(f"{pid} (its mask is the one version {held_in} held)")
        elif pid in at_cut and _mask(at_cut[pid]) != _mask(base["pairs"][pid]):
            stale.append(f"{pid} (corrected since version {cut}, where this batch left main)")
    if stale:
        more = f" and {len(stale) - SHOWN} more" if len(stale) > SHOWN else ""
        raise ConflictError(
            f"{len(stale)} pair(s) of this batch carry a mask that version {version} has corrected "
            f"since: {', '.join(stale[:SHOWN])}{more}; taking them would undo those corrections. Drop "
            f"them from the batch, or pull the current version (`wms data pull {version} DIR`), fix "
            "their masks on top of it and send those — nothing was written"
        )


def _earlier_masks(store: DatasetStore, base: dict[str, Any], ids: list[str]) -> dict[str, dict[str, str]]:
    """For each of `ids`: the masks it held in the versions before `base` other than its mask
    in `base`, each with the latest version that held it. Walks the parents until every id is
    followed back to the version that added it (or the history ends)."""
    now = {pid: _mask(base["pairs"][pid]) for pid in ids}
    found: dict[str, dict[str, str]] = {pid: {} for pid in ids}
    following, seen, parent = set(ids), {base["version"]}, base.get("parent")
    while following and parent and parent not in seen:
        seen.add(parent)
        try:
            manifest = store.manifest(parent)
        except VersionNotFound:
            break  # the versions before it are gone from the store: nothing older to compare with
        for pid in sorted(following):
            entry = manifest["pairs"].get(pid)
            if entry is None:
                following.discard(pid)  # added after this version
            elif _mask(entry) != now[pid]:
                found[pid].setdefault(_mask(entry), parent)
        parent = manifest.get("parent")
    return found


def _pairs_of(store: DatasetStore, version: str) -> dict[str, Any]:
    try:
        return dict(store.manifest(version)["pairs"])
    except VersionNotFound:
        return {}  # main pointed at a version this store lacks: the first rule still holds


def _mask(entry: dict[str, Any]) -> str:
    return str(entry["mask"]["sha256"])
