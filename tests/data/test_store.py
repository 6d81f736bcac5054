"""The dataset store, run against a local folder and against S3 (moto's server on loopback)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import png_bomb

from wms.data.lease import lease, lock_folder
from wms.data.store import DatasetStore
from wms.errors import BackendError, ConflictError, DataError


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> DatasetStore:
    if request.param == "local":
        return DatasetStore(str(tmp_path / "store"), workers=4)
    bucket = request.getfixturevalue("s3_bucket")
    return DatasetStore(f"s3://{bucket}/datasets", workers=4)


def blob_count(store: DatasetStore) -> int:
    try:
        return len(store.fs.find(f"{store.root}/blobs"))
    except FileNotFoundError:
        return 0


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ingest_makes_a_version_and_lists_it(store: DatasetStore, make_batch: Callable[..., Path]) -> None:
    result = store.ingest(make_batch("a", count=5), None)
    assert len(result.added) == 5 and result.blobs_written == 10
    [info] = store.versions()
    assert (info.id, info.parent, info.pairs) == (result.version, None, 5)
    manifest = store.manifest(result.version)
    assert sum(manifest["counts"][s] for s in ("train", "val", "test")) == 5
    entry = next(iter(manifest["pairs"].values()))
    assert entry["size"] == [64, 64] and entry["split"] in ("train", "val", "test")


def test_ingesting_the_same_content_again_is_no_change(
    store: DatasetStore, make_batch: Callable[..., Path]
) -> None:
    batch = make_batch("a", count=4)
    first = store.ingest(batch, None)
    blobs = blob_count(store)
    again = store.ingest(batch, first.version)
    assert again.no_change and again.blobs_written == 0 and len(again.unchanged) == 4
    assert blob_count(store) == blobs
    assert [v.id for v in store.versions()] == [first.version]


def test_second_batch_builds_on_the_first(store: DatasetStore, make_batch: Callable[..., Path]) -> None:
    v1 = store.ingest(make_batch("a", count=4, seed=1), None).version
    v2 = store.ingest(make_batch("b", count=3, seed=2), v1).version
    assert [(v.id, v.parent, v.pairs) for v in store.versions()] == [(v1, None, 4), (v2, v1, 7)]
    diff = store.diff(v1, v2)
    assert len(diff.added) == 3 and diff.removed == [] and diff.changed == []


def test_a_conflicting_id_writes_nothing(store: DatasetStore, make_batch: Callable[..., Path]) -> None:
    v1 = store.ingest(make_batch("a", count=3, seed=1), None).version
    clash = make_batch("b", count=3, seed=9)
    for kind in ("images", "masks"):
        for p in (clash / kind).iterdir():
            p.rename(p.with_name(p.name.replace("s9", "s1")))
    blobs = blob_count(store)
    with pytest.raises(ConflictError, match=r"3 id\(s\) already in version"):
        store.ingest(clash, v1)
    assert blob_count(store) == blobs
    assert [v.id for v in store.versions()] == [v1]


def test_a_stored_photo_with_another_mask_corrects_that_mask_in_its_split(
    store: DatasetStore, make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    a = make_batch("a", count=4, seed=1)
    v1 = store.ingest(a, None).version
    fixed = tmp_path / "fixed"
    pid = sorted(p.stem for p in (a / "images").iterdir())[0]
    copy_pair(a, pid, fixed, pid)  # the photo as stored, byte for byte
    [mask] = (fixed / "masks").iterdir()
    mask.write_bytes((a / "masks" / "synth_s1_00001.png").read_bytes())  # another mask
    with pytest.raises(ConflictError, match="same photo and another mask"):
        store.ingest(fixed, v1)  # not without asking: an older copy would undo corrections since
    result = store.ingest(fixed, v1, correct=True)
    assert (result.added, result.corrected, result.no_change) == ([], [pid], False)
    before, after = store.manifest(v1)["pairs"], store.manifest(result.version)["pairs"]
    assert after[pid]["mask"]["sha256"] == sha(mask) != before[pid]["mask"]["sha256"]
    assert after[pid]["split"] == before[pid]["split"] and after[pid]["image"] == before[pid]["image"]
    assert store.diff(v1, result.version).changed == [pid]
    assert store.ingest(fixed, result.version, correct=True).no_change  # sent again: nothing to correct


def test_a_folder_from_an_older_version_does_not_undo_a_mask_corrected_since(
    store: DatasetStore, make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    """A labeller's folder pulled from v1 (or a batch left in data/incoming since v1) still holds
    a pair whose mask another labeller corrected in v2: sent as a correction, it would put the
    old mask back. It is refused, naming the pair, and nothing is written."""
    a = make_batch("a", count=4, seed=1)
    v1 = store.ingest(a, None).version
    older, fixed, pid = tmp_path / "older", tmp_path / "fixed", "synth_s1_00000"
    store.pull(v1, older)
    copy_pair(a, pid, fixed, pid)
    (fixed / "masks" / f"{pid}.png").write_bytes((a / "masks" / "synth_s1_00001.png").read_bytes())
    v2 = store.ingest(fixed, v1, correct=True).version  # labeller B's fix
    copy_pair(make_batch("b", count=1, seed=2), "synth_s2_00000", older, "synth_s2_00000")  # and a new pair

    with pytest.raises(ConflictError) as refused:
        store.ingest(older, v2, correct=True)
    message = str(refused.value)
    assert f"version {v2} has corrected since: {pid} (its mask is the one version {v1} held)" in message
    assert f"wms data pull {v2} DIR" in message and "nothing was written" in message
    assert [v.id for v in store.versions()] == [v1, v2]
    assert store.manifest(v2)["pairs"][pid]["mask"]["sha256"] == sha(fixed / "masks" / f"{pid}.png")


def test_a_fix_made_on_the_version_a_branch_left_main_at_is_refused_once_main_corrected_it(
    store: DatasetStore, make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    """Labellers A and B both fix one mask from v1; B's fix is in v2 first. A's batch, cut at v1,
    would replace B's fix unseen: refused. A fix made on v2 (or from a base no one knows) is taken."""
    a = make_batch("a", count=4, seed=1)
    v1 = store.ingest(a, None).version
    pid = "synth_s1_00000"
    fix_b, fix_a = tmp_path / "b", tmp_path / "a_fix"
    for folder, other in ((fix_b, "synth_s1_00001"), (fix_a, "synth_s1_00002")):
        copy_pair(a, pid, folder, pid)
        (folder / "masks" / f"{pid}.png").write_bytes((a / "masks" / f"{other}.png").read_bytes())
    v2 = store.ingest(fix_b, v1, correct=True).version

    with pytest.raises(
        ConflictError, match=rf"{pid} \(corrected since version {v1}, where this batch left main\)"
    ):
        store.plan(fix_a, v2, correct=True, cut=v1)
    assert store.plan(fix_a, v2, correct=True, cut=v2).corrected == [pid]
    assert store.plan(fix_a, v2, correct=True).corrected == [pid]


def copy_pair(source: Path, pair_id: str, folder: Path, new_id: str) -> None:
    """Put pair `pair_id` of `source` into `folder` under another id, as a person copying files would."""
    for kind in ("images", "masks"):
        [original] = (source / kind).glob(f"{pair_id}.*")
        (folder / kind).mkdir(parents=True, exist_ok=True)
        (folder / kind / f"{new_id}{original.suffix}").write_bytes(original.read_bytes())


@pytest.mark.parametrize("against", ["base", "batch"])
def test_the_same_image_under_another_id_writes_nothing(
    store: DatasetStore, make_batch: Callable[..., Path], against: str
) -> None:
    a = make_batch("a", count=3, seed=1)
    v1 = store.ingest(a, None).version
    b = make_batch("b", count=2, seed=2)
    source = a if against == "base" else b
    original = sorted(p.stem for p in (source / "images").iterdir())[0]
    copy_pair(source, original, b, "zz-copy")
    blobs = blob_count(store)
    with pytest.raises(ConflictError, match="same image") as caught:
        store.ingest(b, v1)
    assert repr(original) in str(caught.value) and "'zz-copy'" in str(caught.value)
    assert "nothing was written" in str(caught.value)
    assert blob_count(store) == blobs and [v.id for v in store.versions()] == [v1]


@pytest.mark.parametrize(
    ("stored", "new"),
    [("img_0001", "IMG_0001"), ("cafe\u0301", "CAF\u00c9")],  # case; case and Unicode form
    ids=["case", "unicode"],
)
@pytest.mark.parametrize("against", ["base", "batch"])
def test_ids_that_differ_only_in_case_are_refused(
    store: DatasetStore, make_batch: Callable[..., Path], against: str, stored: str, new: str
) -> None:
    a = make_batch("a", count=2, seed=1)
    b = make_batch("b", count=3, seed=2)
    rename = {"synth_s1_00001": stored} if against == "base" else {"synth_s2_00001": stored}
    rename["synth_s2_00000"] = new  # other content, under an id that folds to `stored`
    for kind in ("images", "masks"):
        for folder in (a, b):
            for p in list((folder / kind).iterdir()):
                if p.stem in rename:
                    p.rename(p.with_name(rename[p.stem] + p.suffix))
    v1 = store.ingest(a, None).version
    blobs = blob_count(store)
    with pytest.raises(ConflictError, match="only in letter case") as caught:
        store.ingest(b, v1)
    assert repr(stored) in str(caught.value) and repr(new) in str(caught.value)
    assert blob_count(store) == blobs and [v.id for v in store.versions()] == [v1]


def test_pull_reproduces_every_byte_and_fetches_only_what_is_missing(
    store: DatasetStore, make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    batch = make_batch("a", count=6)
    version = store.ingest(batch, None).version
    out = tmp_path / "pulled"
    first = store.pull(version, out)
    assert (first.fetched, first.reused) == (12, 0)
    for kind in ("images", "masks"):
        originals = {p.name: sha(p) for p in (batch / kind).iterdir()}
        assert {p.name: sha(p) for p in (out / kind).iterdir()} == originals
    victim = next((out / "images").iterdir())
    victim.write_bytes(b"damaged")
    second = store.pull(version, out)
    assert (second.fetched, second.reused) == (1, 11)
    assert sha(victim) == sha(batch / "images" / victim.name)
    assert second.replaced == [str(victim)] and first.replaced == []


def test_a_corrupt_blob_is_refused(
    store: DatasetStore, make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    version = store.ingest(make_batch("a", count=2), None).version
    blob = store.fs.find(f"{store.root}/blobs")[0]
    store.fs.pipe_file(blob, b"bit rot")
    with pytest.raises(BackendError, match="corrupt"):
        store.pull(version, tmp_path / "out")


def test_a_missing_blob_names_its_pair_writes_nothing_and_ingest_restores_it(
    store: DatasetStore, make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    batch = make_batch("a", count=3)
    version = store.ingest(batch, None).version
    lost = sorted((batch / "images").iterdir())[1]
    store.fs.rm(store.blob_path(sha(lost)))
    out = tmp_path / "out"
    with pytest.raises(BackendError) as caught:
        store.pull(version, out)
    message = str(caught.value)
    assert f"the image of pair {lost.stem!r}" in message and version in message
    assert "wms data ingest" in message and "nothing was written" in message
    assert not out.exists()

    again = store.ingest(batch, version)  # the same pairs again put the lost blob back
    assert again.no_change and again.blobs_written == 1
    assert store.pull(version, out).fetched == 6
    assert sha(out / "images" / lost.name) == sha(lost)


def test_a_crash_before_the_manifest_leaves_the_previous_version(
    store: DatasetStore, make_batch: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = store.ingest(make_batch("a", count=3, seed=1), None).version
    real_put = store._put

    def crash_on_manifest(path: str, data: bytes) -> Any:
        if "/versions/" in path:
            raise KeyboardInterrupt  # the writer is killed after its blobs, before its manifest
        return real_put(path, data)

    monkeypatch.setattr(store, "_put", crash_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        store.ingest(make_batch("b", count=3, seed=2), v1)
    assert [v.id for v in store.versions()] == [v1]
    assert store.manifest(v1)["counts"]["pairs"] == 3
    # The killed writer released its lock, so the next ingest goes through.
    monkeypatch.setattr(store, "_put", real_put)
    assert store.ingest(make_batch("b", count=3, seed=2), v1).version != v1


def test_a_second_writer_waits_then_fails_clearly(
    store: DatasetStore, make_batch: Callable[..., Path]
) -> None:
    store.lock_wait = 0.3
    held = lease(store.fs, store.lock_path, owner="someone else", ttl_seconds=60)
    with held, pytest.raises(BackendError, match="locked by someone else"):
        store.ingest(make_batch("a", count=2), None)
    assert store.versions() == []


def test_an_expired_lock_does_not_block(store: DatasetStore, make_batch: Callable[..., Path]) -> None:
    folder = lock_folder(store.lock_path)
    store.fs.makedirs(folder, exist_ok=True)
    store.fs.pipe_file(
        f"{folder}/0000000001.json",
        b'{"owner": "dead", "token": "x", "expires_at": "2000-01-01T00:00:00+00:00"}',
    )
    assert store.ingest(make_batch("a", count=2), None).added


def test_pairs_without_partner_are_refused(store: DatasetStore, make_batch: Callable[..., Path]) -> None:
    batch = make_batch("a", count=3)
    next((batch / "masks").iterdir()).unlink()
    with pytest.raises(DataError, match="no partner"):
        store.ingest(batch, None)
    assert store.versions() == []


@pytest.mark.parametrize("content", [b"not a photo", png_bomb(20_000, 20_000)], ids=["text", "bomb"])
def test_a_file_that_is_no_image_is_named_and_nothing_is_written(
    store: DatasetStore, make_batch: Callable[..., Path], content: bytes
) -> None:
    batch = make_batch("a", count=3)
    odd = sorted((batch / "images").iterdir())[1]
    odd.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(str(odd))):
        store.ingest(batch, None)
    assert store.versions() == [] and blob_count(store) == 0


def test_unknown_version_names_the_latest(store: DatasetStore, make_batch: Callable[..., Path]) -> None:
    v1 = store.ingest(make_batch("a", count=2), None).version
    with pytest.raises(DataError, match=v1):
        store.manifest("0123456789ab")


def test_an_unknown_version_is_answered_from_the_listing_without_reading_every_manifest(
    store: DatasetStore, make_batch: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A year of batches is hundreds of manifests, each holding every pair: a mistyped id read
    all of them before saying so, and one damaged manifest answered in its place."""
    versions: list[str] = []
    for seed in (1, 2, 3):
        versions.append(
            store.ingest(
                make_batch(f"b{seed}", count=2, seed=seed), versions[-1] if versions else None
            ).version
        )
    tamper(store, versions[0], lambda manifest: manifest.update(counts="?"))  # an old one, edited by hand
    reads: list[str] = []
    cat_file = store.fs.cat_file
    monkeypatch.setattr(
        store.fs, "cat_file", lambda path, *a, **k: reads.append(path) or cat_file(path, *a, **k)
    )
    with pytest.raises(DataError) as caught:
        store.manifest("0123456789ab")
    assert str(caught.value).startswith(
        f"dataset version '0123456789ab' is not in the store {store.url} (latest: "
    )
    assert all(v in str(caught.value) for v in versions)
    assert reads == [f"{store.root}/versions/0123456789ab.json"]


def tamper(store: DatasetStore, version: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit a stored manifest in place, as someone with write access to the store could."""
    path = f"{store.root}/versions/{version}.json"
    manifest = json.loads(store.fs.cat_file(path))
    change(manifest)
    store.fs.pipe_file(path, json.dumps(manifest).encode())


@pytest.mark.parametrize("bad_name", ["../x.png", "ABSOLUTE"])
def test_a_manifest_naming_a_path_outside_the_folder_writes_nothing(
    store: DatasetStore, make_batch: Callable[..., Path], tmp_path: Path, bad_name: str
) -> None:
    version = store.ingest(make_batch("a", count=3), None).version
    escaped = tmp_path / "evil.png"
    name = str(escaped) if bad_name == "ABSOLUTE" else bad_name

    def point_outside(manifest: dict[str, Any]) -> None:
        last = sorted(manifest["pairs"])[-1]  # the others are fine, yet none is written
        manifest["pairs"][last]["image"]["name"] = name

    tamper(store, version, point_outside)
    area = tmp_path / "area"
    area.mkdir()
    with pytest.raises(DataError, match="not a plain file name") as caught:
        store.pull(version, area / "out")
    assert repr(name) in str(caught.value) and "nothing was written" in str(caught.value)
    assert list(area.iterdir()) == [] and not escaped.exists() and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("sha256", "../../blobs", "not 64 lowercase hex"),
        ("split", "holdout", "must be one of train, val, test"),
        ("parent", "../../etc", "parent '../../etc' is not a version id"),
    ],
)
def test_a_manifest_with_a_bad_hash_split_or_parent_is_refused(
    store: DatasetStore, make_batch: Callable[..., Path], tmp_path: Path, field: str, value: str, problem: str
) -> None:
    version = store.ingest(make_batch("a", count=2), None).version

    def spoil(manifest: dict[str, Any]) -> None:
        entry = next(iter(manifest["pairs"].values()))
        if field == "sha256":
            entry["mask"]["sha256"] = value
        elif field == "split":
            entry["split"] = value
        else:
            manifest["parent"] = value

    tamper(store, version, spoil)
    with pytest.raises(DataError, match=problem):
        store.pull(version, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_malformed_version_id_is_refused_before_the_store_is_read(
    store: DatasetStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def touched(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the store was read with {args}")

    for method in ("cat_file", "ls", "exists", "open", "find"):
        monkeypatch.setattr(store.fs, method, touched)
    for bad in ("../../etc", "0123456789AB", "0123456789abc", ""):
        with pytest.raises(DataError, match="is not a dataset version id"):
            store.manifest(bad)
        with pytest.raises(DataError, match="is not a dataset version id"):
            store.pull(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_pair_with_a_control_character_in_its_name_is_not_ingested(
    store: DatasetStore, make_batch: Callable[..., Path]
) -> None:
    batch = make_batch("a", count=2)
    for kind in ("images", "masks"):
        first = sorted((batch / kind).iterdir())[0]
        first.rename(first.with_name("bad\tname" + first.suffix))
    with pytest.raises(DataError, match="control character"):
        store.ingest(batch, None)
    assert store.versions() == []
