"""`wms data forget`: a person asks to have their photo deleted; it leaves the capture inbox, and
every other copy WMS made of it (a dataset version, a commit) is named."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from wms.config import ServeSettings
from wms.data.splits import split_of
from wms.serve.capture import Capture, Captured
from wms.uncertainty import Assessment

UNSURE = Assessment(score=0.9, entropy=0.8, uncertain_share=0.9, regions=0, verdict="check this one")


def _photo(seed: int) -> bytes:
    """What a person uploads: a small photo, different for each seed."""
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _id(upload: bytes) -> str:
    return hashlib.sha256(upload).hexdigest()[:16]


def _capture(inbox: str, upload: bytes) -> str:
    """The service keeps `upload` in `inbox`, as serve.capture does; returns its capture id."""
    capture = Capture(ServeSettings(capture="sample", capture_dir=inbox), "1", 0.5, count=lambda _: None)
    image = Image.open(io.BytesIO(upload)).convert("RGB")
    capture.write(Captured(upload, image, b"mask", UNSURE, 0.1, "sample"))
    return _id(upload)


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_a_labelled_photo_leaves_the_inbox_and_its_version_and_commit_are_named(
    project_dir: Path, make_batch: Callable[..., Path], cli: Callable[..., Any], tmp_path: Path
) -> None:
    inbox = project_dir / ".wms" / "inbox"  # serve.capture_dir's default
    # The labelled photo lands in the train split (by its id), where the drift report reads it.
    labelled = next(p for p in map(_photo, range(100)) if split_of(_id(p), 0.15, 0.15) == "train")
    unlabelled = _photo(101)
    pid, other = _capture(str(inbox), labelled), _capture(str(inbox), unlabelled)
    assert len(_files(inbox)) == 6

    # The labelled photo went the way suggest and from-labelstudio send it: a pair under its id,
    # pushed under data/incoming and ingested.
    batch, incoming = make_batch(count=6), project_dir / "data" / "incoming"
    for kind in ("images", "masks"):
        (incoming / kind).mkdir(parents=True)
        for n, path in enumerate(sorted((batch / kind).iterdir())):
            shutil.copy(path, incoming / kind / (f"{pid}.png" if n == 0 else path.name))
    _git(project_dir, "init", "-q")
    _git(project_dir, "add", "data")
    _git(project_dir, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "new pairs")
    commit = _git(project_dir, "rev-parse", "--short", "HEAD")
    assert cli("data", "ingest", "data/incoming").exit_code == 0
    version = _pointed(project_dir)

    sent = tmp_path / "the-photo-they-sent.png"
    sent.write_bytes(labelled)
    blobs = sorted(p.name for p in (project_dir / ".wms" / "store" / "blobs").rglob("*"))
    before = cli("data", "forget", str(sent), hashlib.sha256(unlabelled).hexdigest(), "--dry-run")
    assert before.exit_code == 1 and "would delete" in before.output
    assert len(_files(inbox)) == 6  # a dry run deletes nothing
    assert sorted(p.name for p in (project_dir / ".wms" / "store" / "blobs").rglob("*")) == blobs
    assert _pointed(project_dir) == version

    result = cli("data", "forget", str(sent), hashlib.sha256(unlabelled).hexdigest())
    out = " ".join(result.output.split())
    assert result.exit_code == 1, out  # a copy is left where WMS does not delete: the history
    assert _files(inbox) == []  # both captures, photo, pre-label and metadata
    assert f"deleted images/{pid}.jpg, masks/{pid}.png, meta/{pid}.json" in out
    assert f"photo {other} capture inbox .wms/inbox: deleted" in out
    assert f"dataset store: deleted its 2 file(s), held by version(s) {version}" in out
    assert f"added by commit(s) {commit}" in out
    assert f"1 of 2 photo(s) are still in the repository's history or its branches ({pid})" in out

    # The store: a new version without the pair, which data/dataset.json names; the pair's photo
    # and mask are gone, the other pairs' files are all there and the new version reads whole.
    now = _pointed(project_dir)
    assert now != version and f"data/dataset.json now names version {now}" in out
    assert "2 file(s) erased from the store" in out
    pulled = cli("data", "pull", now, str(tmp_path / "now"))
    assert pulled.exit_code == 0, pulled.output
    assert len(_files(tmp_path / "now" / "images")) == 5 and not list((tmp_path / "now").rglob(f"{pid}.*"))
    left = sorted(p.name for p in (project_dir / ".wms" / "store" / "blobs").rglob("*"))
    assert len(left) == len(blobs) - 2
    # The version that held it says what became of it.
    old = cli("data", "pull", version, str(tmp_path / "old"))
    assert old.exit_code == 1
    assert "was erased from the store" in old.output and f"by `wms data forget` (pair {pid})" in old.output

    # Nothing builds on the version that held it: its pair would come back, without its files.
    onto_old = cli("data", "ingest", str(make_batch("more", count=3, seed=9)), "--base", version)
    assert onto_old.exit_code == 1
    assert f"version {version} holds a photo erased since by `wms data forget`" in onto_old.output
    assert _pointed(project_dir) == now
    # Nor does the labelled batch kept since bring it back onto the new version.
    pushed_again = cli("data", "ingest", "data/incoming")
    assert pushed_again.exit_code == 1
    assert f"pair '{pid}' in data/incoming is a photo deleted on request by `wms data forget` (20" in (
        " ".join(pushed_again.output.split())
    )
    assert _pointed(project_dir) == now

    again = cli("data", "forget", str(sent))
    assert again.exit_code == 1  # the history still holds it
    assert "capture inbox .wms/inbox: not there" in again.output
    assert f"its files were erased before, held by version(s) {version}" in " ".join(again.output.split())
    assert "erased from the store" not in again.output and _pointed(project_dir) == now

    # The drift report of a model trained on the old version compares with its training photos
    # but the erased one, and says so.
    from wms.config import load_settings
    from wms.data.store import open_store
    from wms.drift import training_reference

    store = open_store(load_settings(start=project_dir))
    train = [i for i, e in store.manifest(version)["pairs"].items() if e["split"] == "train"]
    assert pid in train
    loaders, described = training_reference(load_settings(start=project_dir), version, 100, 0)
    assert len(loaders) == len(train) - 1 and described.endswith(", 1 erased since left out")
    assert all(load() is not None for load in loaders)


def _pointed(root: Path) -> str:
    return str(json.loads((root / "data" / "dataset.json").read_text())["version"])


def test_a_mask_another_pair_holds_too_stays_in_the_store(
    project_dir: Path, make_batch: Callable[..., Path], cli: Callable[..., Any]
) -> None:
    batch, pid = make_batch(count=4), "0123456789abcdef"
    first, second = sorted((batch / "masks").iterdir())[:2]
    shutil.copy(first, second)  # two pairs, one mask file (an all-black mask, say)
    for kind in ("images", "masks"):
        (batch / kind / first.name).rename(batch / kind / f"{pid}.png")
    assert cli("data", "ingest", str(batch)).exit_code == 0
    version = _pointed(project_dir)

    result = cli("data", "forget", pid)
    out = " ".join(result.output.split())
    assert result.exit_code == 0, out  # no git repository here: nothing is left
    assert (
        f"deleted its 1 file(s), held by version(s) {version}; 1 file(s) another pair holds too stay" in out
    )
    pulled = cli("data", "pull", _pointed(project_dir), str(project_dir / "now"))
    assert pulled.exit_code == 0, pulled.output  # the other pair's mask is still there
    assert len(_files(project_dir / "now" / "masks")) == 3


def test_the_drawings_training_runs_keep_of_it_go_and_the_others_stay(
    project_dir: Path, make_batch: Callable[..., Path], cli: Callable[..., Any], tmp_path: Path
) -> None:
    """A run draws its test split's worst photos (worst/NN-<id>.jpg) and a sheet of val photos."""
    from wms.config import load_settings
    from wms.registry import MlflowRegistry
    from wms.train.run import train_and_log

    hexes = (hashlib.sha256(str(n).encode()).hexdigest()[:16] for n in range(1000))
    tid = next(h for h in hexes if split_of(h, 0.15, 0.15) == "test")
    vid = next(h for h in hexes if split_of(h, 0.15, 0.15) == "val")
    batch = make_batch(count=12)
    for kind in ("images", "masks"):
        first, second = sorted((batch / kind).iterdir())[:2]
        first.rename(batch / kind / f"{tid}.png")
        second.rename(batch / kind / f"{vid}.png")
    assert cli("data", "ingest", str(batch)).exit_code == 0
    version = _pointed(project_dir)
    assert cli("data", "pull", version, str(tmp_path / "pulled")).exit_code == 0
    project = load_settings(start=project_dir)
    run_id = train_and_log(
        project, tmp_path / "pulled", MlflowRegistry(project), dataset_version=version
    ).run_id
    artifacts = project_dir / ".wms" / "mlartifacts" / run_id / "artifacts"
    worst = _files(artifacts / "worst")
    drawn = [n for n in worst if n.endswith(f"-{tid}.jpg")]
    assert len(drawn) == 1 and (artifacts / "plots" / "val_predictions.jpg").is_file()
    assert list((project_dir / ".wms" / "cache").glob("*.npy"))  # decoded photos, this version's
    work = project_dir / ".wms" / "work" / "dataset"  # where the pipeline merges a batch
    shutil.copytree(tmp_path / "pulled", work)
    # A run someone deleted in MLflow's UI keeps its files until `mlflow gc`.
    mlflow = MlflowRegistry(project).mlflow
    experiment = mlflow.experiment(project.settings.tracking.experiment)
    deleted = mlflow.client.create_run(experiment.experiment_id).info.run_id
    mlflow.log_artifacts(deleted, artifacts / "worst", "worst")
    mlflow.client.delete_run(deleted)
    deleted_worst = project_dir / ".wms" / "mlartifacts" / deleted / "artifacts" / "worst"
    assert drawn[0] in _files(deleted_worst)

    result = cli("data", "forget", tid, vid)
    out = " ".join(result.output.split())
    assert result.exit_code == 0, out
    assert "MLflow: deleted worst/" in out
    assert f"worst/{drawn[0]} of run {run_id[:8]}" in out and f"worst/{drawn[0]} of run {deleted[:8]}" in out
    assert _files(deleted_worst) == sorted(set(worst) - set(drawn))
    assert f"photo {vid}" in out and f"MLflow: deleted plots/val_predictions.jpg of run {run_id[:8]}" in out
    assert _files(artifacts / "worst") == sorted(set(worst) - set(drawn))  # the others' drawings stay
    assert not (artifacts / "plots" / "val_predictions.jpg").exists()
    assert (artifacts / "plots" / "training_curves.png").is_file()
    assert not list((project_dir / ".wms" / "cache").glob("*.npy"))
    assert "training cache" in out
    assert len(_files(work / "images")) == 10 and not list(work.rglob(f"{tid}.*"))


def test_a_photo_leaves_an_s3_inbox(
    project_dir: Path, s3_bucket: str, cli: Callable[..., Any], tmp_path: Path
) -> None:
    import fsspec

    inbox = f"s3://{s3_bucket}/inbox"
    with (project_dir / "wms.toml").open("a") as fh:
        fh.write(f'\n[serve]\ncapture_dir = "{inbox}"\n')
    kept, gone = _capture(inbox, _photo(3)), _capture(inbox, _photo(4))
    result = cli("data", "forget", gone)
    assert result.exit_code == 0, result.output
    fs, root = fsspec.core.url_to_fs(inbox, skip_instance_cache=True, use_listings_cache=False)
    left = sorted(p.rsplit("/", 1)[-1] for p in fs.find(root))
    assert left == [f"{kept}.jpg", f"{kept}.json", f"{kept}.png"]
    assert "the project is no git repository" in result.output


def test_a_versioned_bucket_keeps_no_old_version_of_its_files(
    project_dir: Path,
    s3_bucket: str,
    make_batch: Callable[..., Path],
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bucket infrastructure/terraform makes is versioned: a deleted object stays as an old
    version for 90 days. The inbox and the store both live in it here."""
    import boto3

    s3 = boto3.client("s3")
    s3.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    inbox = f"s3://{s3_bucket}/inbox"
    with (project_dir / "wms.toml").open("a") as fh:
        fh.write(f'\n[serve]\ncapture_dir = "{inbox}"\n[store]\nurl = "s3://{s3_bucket}/store"\n')
    kept, gone = _capture(inbox, _photo(3)), _capture(inbox, _photo(4))
    batch = make_batch(count=4)
    for kind in ("images", "masks"):
        next((batch / kind).iterdir()).rename(batch / kind / f"{gone}.png")
    assert cli("data", "ingest", str(batch)).exit_code == 0

    def versions(word: str) -> list[str]:
        listed = s3.list_object_versions(Bucket=s3_bucket)
        entries = [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]
        return [e["Key"] for e in entries if word in e["Key"]]

    blobs_before = len(versions("store/blobs/"))
    result = cli("data", "forget", gone)
    out = " ".join(result.output.split())
    assert result.exit_code == 0, out
    assert "the bucket's old versions of these files: deleted 5" in out  # 3 in the inbox, 2 blobs
    assert versions(gone) == []
    assert len(versions(kept)) == 3 and len(versions("store/blobs/")) == blobs_before - 2

    # Credentials that may delete objects but not their versions: what is left is said, exit 1.
    again = _capture(inbox, _photo(5))

    def refused(*_: Any, **__: Any) -> int:
        raise PermissionError("Access Denied")

    monkeypatch.setattr("wms.forget.purge_old_versions", refused)
    denied = cli("data", "forget", again)
    out = " ".join(denied.output.split())
    assert denied.exit_code == 1 and "deleted images/" in out  # the capture itself is gone
    assert "could not delete the old versions the bucket keeps (Access Denied)" in out
    assert "error: the bucket keeps old versions of their files (above)" in out


def test_the_bucket_s_old_versions_of_the_drawings_go_where_the_mlflow_server_keeps_them(
    s3_bucket: str,
) -> None:
    """A tracking server proxies run files (mlflow-artifacts:/<experiment>/<run>/artifacts) to its
    --artifacts-destination in the bucket: deleted through it, a drawing stays as an old version."""
    import boto3
    import fsspec

    from wms.forget import purge_old_versions
    from wms.forget_runs import Drawing, drawing_urls

    s3 = boto3.client("s3")
    s3.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    destination = f"s3://{s3_bucket}/wms/mlflow"
    proxied = Drawing("r1", "worst/00-abc.jpg", "mlflow-artifacts:/1/r1/artifacts", None)
    direct = Drawing("r2", "plots/val_predictions.jpg", f"s3://{s3_bucket}/runs/r2/artifacts", None)
    moved = Drawing("r3", "worst/01-abc.jpg", "file:///old/r3/artifacts", Path("/new/r3/artifacts"))
    urls = drawing_urls([proxied, direct, moved, proxied], destination)
    assert urls == [
        f"{destination}/1/r1/artifacts/worst/00-abc.jpg",
        f"s3://{s3_bucket}/runs/r2/artifacts/plots/val_predictions.jpg",
    ]  # a folder keeps no old versions; a drawing named twice is purged once
    assert drawing_urls([proxied], "") == []  # the server's destination unknown: nothing to name

    keep = "wms/mlflow/1/r1/artifacts/worst/00-abcd.jpg"  # another file whose key starts alike
    for url in [*urls, f"s3://{s3_bucket}/{keep}"]:
        key = url.split("/", 3)[3]
        s3.put_object(Bucket=s3_bucket, Key=key, Body=b"drawing")
        s3.put_object(Bucket=s3_bucket, Key=key, Body=b"drawing again")
    for url in urls:
        s3.delete_object(Bucket=s3_bucket, Key=url.split("/", 3)[3])  # as the MLflow server does
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    assert purge_old_versions(fs, urls, dry_run=True) == 4
    assert purge_old_versions(fs, urls) == 4
    listed = s3.list_object_versions(Bucket=s3_bucket)
    left = [e["Key"] for e in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]]
    assert left == [keep, keep]


def test_labelling_batches_lose_their_copies_and_its_task(
    project_dir: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    """`wms data suggest --out` copied the photo into a batch for labellers, with its pre-label
    and a task in the import file: they go; the other photos of the batch stay."""
    pid, other = _id(_photo(1)), _id(_photo(2))
    batch = tmp_path / "labelling" / "2026-12-01"
    for sub, suffix in (("images", "jpg"), ("prelabels", "png")):
        (batch / sub).mkdir(parents=True)
        for name in (pid, other, f"{pid}0"):  # the last: a name that only starts like it
            (batch / sub / f"{name}.{suffix}").write_bytes(b"copy")
    tasks = [{"data": {"image": f"/data/local-files/?d=x/images/{n}.jpg", "name": n}} for n in (pid, other)]
    (batch / "labelstudio.json").write_text(json.dumps(tasks))

    dry = cli("data", "forget", pid, "--batches", str(tmp_path / "labelling"), "--dry-run")
    assert f"labelling batches: would delete its copies in {batch}" in " ".join(dry.output.split())
    assert len(_files(batch)) == 7
    result = cli("data", "forget", pid, "--batches", str(tmp_path / "labelling"))
    assert result.exit_code == 0, result.output
    assert f"labelling batches: deleted its copies in {batch}" in " ".join(result.output.split())
    assert _files(batch) == sorted(
        [f"{other}.jpg", f"{other}.png", f"{pid}0.jpg", f"{pid}0.png", "labelstudio.json"]
    )
    assert [t["data"]["name"] for t in json.loads((batch / "labelstudio.json").read_text())] == [other]
    again = cli("data", "forget", other, "--batches", str(project_dir))  # no batch in it
    assert "labelling batches: in none" in " ".join(again.output.split())
    mistyped = cli("data", "forget", other, "--batches", str(tmp_path / "labeling"))
    assert mistyped.exit_code == 2 and mistyped.output.startswith(
        f"error: --batches {tmp_path}/labeling is no"
    )


@pytest.mark.parametrize("given", ["nonsense", "abc123", "no-such-file.jpg"])
def test_what_names_no_photo_is_one_line(project_dir: Path, cli: Callable[..., Any], given: str) -> None:
    result = cli("data", "forget", given)
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {given!r} is neither a file nor a photo's sha256")
    assert len(result.output.strip().splitlines()) == 1


def test_a_forget_the_store_refuses_deletes_nothing(
    project_dir: Path, make_batch: Callable[..., Path], cli: Callable[..., Any]
) -> None:
    """Main's dataset would be left empty: refused before the inbox loses anything."""
    inbox = project_dir / ".wms" / "inbox"
    upload = _photo(7)
    pid = _capture(str(inbox), upload)
    batch = make_batch(count=1)
    for kind in ("images", "masks"):
        next((batch / kind).iterdir()).rename(batch / kind / f"{pid}.png")
    assert cli("data", "ingest", str(batch)).exit_code == 0
    version = _pointed(project_dir)
    result = cli("data", "forget", pid)
    assert result.exit_code == 1
    assert result.output.startswith(f"error: version {version} holds no pair but {pid}: a version without it")
    assert len(_files(inbox)) == 3 and _pointed(project_dir) == version
    assert cli("data", "pull", version, str(project_dir / "again")).exit_code == 0


def test_an_s3_inbox_without_credentials_is_one_line(
    project_dir: Path, no_aws: None, cli: Callable[..., Any]
) -> None:
    with (project_dir / "wms.toml").open("a") as fh:
        fh.write('\n[serve]\ncapture_dir = "s3://wms-nowhere/inbox"\n')
    result = cli("data", "forget", "0123456789abcdef")
    assert result.exit_code == 1
    assert result.output.startswith(
        "error: could not delete from the capture inbox s3://wms-nowhere/inbox (no AWS credentials"
    )
    assert len(result.output.strip().splitlines()) == 1


def test_a_pair_pushed_under_a_name_of_its_own_is_found_by_its_photo_or_by_its_name(
    project_dir: Path, make_batch: Callable[..., Path], cli: Callable[..., Any], tmp_path: Path
) -> None:
    """A labeller's photo that never went through the capture: the person's file finds the pair
    when it was pushed as it was, --pair names it when it was not. Names alike stay."""
    batch, incoming = make_batch(count=6), project_dir / "data" / "incoming"
    names = ["IMG_0042", "IMG_0042.v2", "meter [3]"]  # a prefix of another, a pathspec pattern
    for kind in ("images", "masks"):
        (incoming / kind).mkdir(parents=True)
        for n, path in enumerate(sorted((batch / kind).iterdir())):
            shutil.copy(path, incoming / kind / (f"{names[n]}.png" if n < 3 else path.name))
    _git(project_dir, "init", "-q")
    _git(project_dir, "add", "data")
    _git(project_dir, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a labeller's pairs")
    commit = _git(project_dir, "rev-parse", "--short", "HEAD")
    assert cli("data", "ingest", "data/incoming").exit_code == 0
    work = project_dir / ".wms" / "work" / "dataset" / "images"  # the pipeline's merged dataset
    work.mkdir(parents=True)
    for name in names:
        (work / f"{name}.png").write_bytes(b"png")

    sent = tmp_path / "what-they-sent.png"
    shutil.copy(incoming / "images" / "IMG_0042.png", sent)
    result = cli("data", "forget", str(sent))
    out = " ".join(result.output.split())
    assert result.exit_code == 1, out  # the history holds it
    assert "photo IMG_0042 " in out and "dataset store: deleted its 2 file(s)" in out
    assert f"added by commit(s) {commit}" in out
    assert _files(work) == ["IMG_0042.v2.png", "meter [3].png"]  # its name's prefix is another pair's

    named = cli("data", "forget", "--pair", "meter [3]")
    out = " ".join(named.output.split())
    assert named.exit_code == 1 and "photo meter [3] " in out and f"added by commit(s) {commit}" in out
    assert _files(work) == ["IMG_0042.v2.png"]
    pulled = cli("data", "pull", _pointed(project_dir), str(tmp_path / "now"))
    assert pulled.exit_code == 0, pulled.output
    assert _files(tmp_path / "now" / "images")[0] == "IMG_0042.v2.png"
    assert len(_files(tmp_path / "now" / "images")) == 4

    # The person's own file, of a pair resized before its push: nothing matches it, and it says so.
    resized = tmp_path / "resized-before-its-push.png"
    resized.write_bytes(_photo(5))
    unknown = cli("data", "forget", str(resized))
    out = " ".join(unknown.output.split())
    assert unknown.exit_code == 0 and "dataset store: in no version" in out
    assert "found nowhere WMS keeps photos" in out and "give it with --pair NAME" in out

    mistyped = cli("data", "forget", "--pair", "IMG_0024")
    assert mistyped.exit_code == 2
    assert mistyped.output.startswith("error: no version of the dataset store holds a pair 'IMG_0024'")
    assert len(mistyped.output.strip().splitlines()) == 1
    nothing = cli("data", "forget")
    assert nothing.exit_code == 2 and "--pair NAME" in nothing.output


def test_a_photo_forgotten_elsewhere_leaves_this_machine_s_training_cache_at_its_next_run(
    project_dir: Path, make_batch: Callable[..., Path], cli: Callable[..., Any], tmp_path: Path
) -> None:
    """`wms data forget` ran on another machine (the serving node's runner, a laptop): this one
    trained on the photo before and still holds its decoded arrays, keyed by no pair."""
    first = cli("--set", "train.epochs=1", "pipeline", "run", "--new-data", make_batch("b1", seed=1))
    assert first.exit_code == 0, first.output
    cache = project_dir / ".wms" / "cache"
    shutil.copytree(cache, tmp_path / "kept")
    pid = sorted(p.stem for p in (project_dir / ".wms" / "work" / "dataset" / "images").iterdir())[0]
    assert cli("data", "forget", "--pair", pid).exit_code == 0
    shutil.rmtree(cache)
    shutil.copytree(tmp_path / "kept", cache)  # what the other machine could not reach
    held = len(list(cache.glob("*.npy")))

    started = time.time()
    second = cli(
        "--set", "train.epochs=1", "pipeline", "run", "--new-data", make_batch("b2", count=12, seed=2)
    )
    assert second.exit_code == 0, second.output
    assert f"{held} array(s) deleted, for photos erased since" in " ".join(second.output.split())
    assert all(p.stat().st_mtime >= started for p in cache.glob("*.npy"))  # each decoded again


def test_a_batch_branch_that_would_point_main_at_it_again_is_named(
    project_dir: Path, make_batch: Callable[..., Path], cli: Callable[..., Any]
) -> None:
    """A batch published before the forget: its pull request's pointer names a version that holds
    the photo, and merging it would bring the photo back into training."""
    batch, pid = make_batch(count=4), "0123456789abcdef"
    for kind in ("images", "masks"):
        next((batch / kind).iterdir()).rename(batch / kind / f"{pid}.png")
    assert cli("data", "ingest", str(batch)).exit_code == 0
    _git(project_dir, "init", "-q", "-b", "main")
    _git(project_dir, "add", "data/dataset.json")
    commit = ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm"]
    _git(project_dir, *commit, "the dataset")
    _git(project_dir, "switch", "-qc", "data/20261207-101500")
    assert cli("data", "ingest", str(make_batch("later", count=3, seed=4))).exit_code == 0
    _git(project_dir, *commit, "Point data/dataset.json at the batch's version", "data/dataset.json")
    _git(project_dir, "switch", "-q", "main")

    result = cli("data", "forget", pid)
    out = " ".join(result.output.split())
    assert result.exit_code == 1, out
    assert "branches: data/20261207-101500 point at a version that holds it" in out  # main is not named
    assert "history or its branches (0123456789abcdef)" in out


def test_with_the_github_host_a_branch_pushed_since_the_last_fetch_is_named_too(
    project_dir: Path, make_batch: Callable[..., Path], cli: Callable[..., Any], tmp_path: Path
) -> None:
    """The pipeline pushed a promotion branch from its runner, and this checkout never fetched
    it: the forget fetches the remote's branches itself, instead of missing the pull request."""
    batch, pid = make_batch(count=4), "0123456789abcdef"
    for kind in ("images", "masks"):
        next((batch / kind).iterdir()).rename(batch / kind / f"{pid}.png")
    assert cli("data", "ingest", str(batch)).exit_code == 0
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", "origin.git")
    _git(project_dir, "init", "-q", "-b", "main")
    _git(project_dir, "remote", "add", "origin", str(tmp_path / "origin.git"))
    _git(project_dir, "add", "data/dataset.json")
    commit = ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm"]
    _git(project_dir, *commit, "the dataset")
    _git(project_dir, "push", "-q", "origin", "main")
    _git(project_dir, "switch", "-qc", "wms/promote-7")
    assert cli("data", "ingest", str(make_batch("later", count=3, seed=4))).exit_code == 0
    _git(project_dir, *commit, "Point data/dataset.json at the batch's version", "data/dataset.json")
    _git(project_dir, "push", "-q", "origin", "wms/promote-7")
    _git(project_dir, "switch", "-q", "main")
    _git(project_dir, "branch", "-qD", "wms/promote-7")  # as if pushed from elsewhere:
    _git(project_dir, "update-ref", "-d", "refs/remotes/origin/wms/promote-7")  # not fetched here

    result = cli("--set", "git.host=github", "data", "forget", pid)

    out = " ".join(result.output.split())
    assert result.exit_code == 1, out
    assert "branches: origin/wms/promote-7 point at a version that holds it" in out
