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

Putting an older mask back on purpose is named, pair by pair, so that a stale copy never passes
by accident: `wms data ingest DIR --restore-masks ID,...`, or for a pushed batch a trailer line
`Restore-masks: ID, ...` in the message of the data branch's head commit. A commit message, not
a file in data/incoming/: a file would stay in the labeller's folder after a squash merge, with
the stale masks, and put them back again with the next batch; the head commit is new each push.
A named pair is spared the first rule only: a mask main corrected after the branch left it is
still refused (the labeller had not seen that fix).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wms.errors import ConflictError, VersionNotFound

if TYPE_CHECKING:
    from wms.data.store import DatasetStore

SHOWN = 5  # pairs named in the refusal
RESTORE_TRAILER = "Restore-masks"  # the commit-message trailer naming the pairs to restore
RESTORE_HOW = (
    f"to put an older mask back on purpose, name its pair: `wms data ingest DIR --restore-masks ID,…`, "
    f"or, for a pushed batch, a last line `{RESTORE_TRAILER}: ID, …` in its head commit's message"
)


def check_corrections(
    store: DatasetStore,
    base: dict[str, Any],
    batch: dict[str, Any],
    corrected: list[str],
    cut: str | None = None,
    restore: frozenset[str] = frozenset(),
) -> list[str]:
    """The `corrected` ids whose older mask the batch puts back (named in `restore`); ConflictError
    naming the `corrected` ids whose stored mask in `base` (a manifest) was itself corrected since
    the batch's copy was made. `batch`: the batch's manifest entries, `cut`: the version the
    batch was cut from, when known, `restore`: ids whose older mask the batch puts back on purpose."""
    if not corrected:
        return []
    version = base["version"]
    replaced = replaced_masks(store, base, {pid: _mask(batch[pid]) for pid in corrected})
    at_cut = _pairs_of(store, cut) if cut and cut != version else {}
    stale, older = [], False
    for pid in corrected:
        if pid in replaced and pid not in restore:
            stale.append(f"{pid} (its mask is the one version {replaced[pid]} held)")
            older = True
        elif pid in at_cut and _mask(at_cut[pid]) != _mask(base["pairs"][pid]):
            stale.append(f"{pid} (corrected since version {cut}, where this batch left main)")
    if stale:
        more = f" and {len(stale) - SHOWN} more" if len(stale) > SHOWN else ""
        raise ConflictError(
            f"{len(stale)} pair(s) of this batch carry a mask that version {version} has corrected "
            f"since: {', '.join(stale[:SHOWN])}{more}; taking them would undo those corrections. Drop "
            f"them from the batch, or pull the current version (`wms data pull {version} DIR`), fix "
            f"their masks on top of it and send those{'; ' + RESTORE_HOW if older else ''} — nothing was "
            "written"
        )
    return [pid for pid in corrected if pid in replaced]


def replaced_masks(store: DatasetStore, base: dict[str, Any], masks: dict[str, str]) -> dict[str, str]:
    """Of `masks` (pair id -> mask sha256, ids `base` holds with another mask): those that the
    pair held in an earlier version of `base`'s line and that were replaced since, each with the
    latest version that held it. Walks `base`'s parents until every id is followed back to the
    version that held its mask, or that added it (or the history ends).

    A version is written after its blobs, so a mask the store holds no blob of was never held
    by any version: only the others are followed, and a genuine fix (new bytes) reads no older
    manifest at all, however long the history (a walk reads one manifest per version)."""
    found: dict[str, str] = {}
    stored = store.stored_blobs(set(masks.values()))
    following = {pid for pid, mask in masks.items() if mask in stored}
    seen, parent = {base["version"]}, base.get("parent")
    while following and parent and parent not in seen:
        seen.add(parent)
        try:
            manifest = store.manifest(parent)
        except VersionNotFound:
            break  # the versions before it are gone from the store: nothing older to compare with
        for pid in sorted(following):
            entry = manifest["pairs"].get(pid)
            if entry is None or _mask(entry) == masks[pid]:
                following.discard(pid)  # added after this version, or found
                if entry is not None:
                    found[pid] = parent
        parent = manifest.get("parent")
    return found


def restore_ids(values: list[str]) -> frozenset[str]:
    """The pair ids named by `--restore-masks` values or `Restore-masks` trailers (comma-separated)."""
    return frozenset(pid.strip() for value in values for pid in value.split(",") if pid.strip())


def _pairs_of(store: DatasetStore, version: str) -> dict[str, Any]:
    try:
        return dict(store.manifest(version)["pairs"])
    except VersionNotFound:
        return {}  # main pointed at a version this store lacks: the first rule still holds


def _mask(entry: dict[str, Any]) -> str:
    return str(entry["mask"]["sha256"])
