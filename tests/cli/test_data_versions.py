"""`wms data ingest | versions | pull | diff` as a user runs them, on a local folder and on S3."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def files(folder: Path) -> dict[str, str]:
    return {
        f"{p.parent.name}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.glob("*/*"))
        if p.parent.name in ("images", "masks")
    }


@pytest.fixture(params=["local", "s3"])
def store_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "s3":
        url = f"s3://{request.getfixturevalue('s3_bucket')}/wms"
        monkeypatch.setenv("WMS_STORE__URL", url)
        return url
    return ".wms/store"


def test_ingest_versions_pull_diff(
    cli: Callable[..., Any],
    project_dir: Path,
    make_batch: Callable[..., Path],
    tmp_path: Path,
    store_url: str,
) -> None:
    first = cli("data", "ingest", make_batch("a", count=4, seed=1))
    assert first.exit_code == 0, first.output
    assert "4 pairs added to an empty store" in first.output
    v1 = first.output.strip().splitlines()[-1]
    pointer = json.loads((project_dir / "data" / "dataset.json").read_text())
    assert pointer["version"] == v1 and pointer["store"] == store_url

    again = cli("data", "ingest", make_batch("a", count=4, seed=1))
    assert again.exit_code == 0 and "no change" in again.output

    second = cli("data", "ingest", make_batch("b", count=2, seed=2))
    v2 = second.output.strip().splitlines()[-1]
    listed = json.loads(cli("data", "versions", "--json").output)
    assert [(v["id"], v["parent"], v["pairs"]) for v in listed] == [(v1, None, 4), (v2, v1, 6)]
    assert {"id", "parent", "created_at", "pairs"} <= set(listed[0])

    out = tmp_path / "pulled"
    assert cli("data", "pull", v2, out).exit_code == 0
    assert files(out) == files(tmp_path / "a") | files(tmp_path / "b")

    diff = json.loads(cli("data", "diff", v1, v2, "--json").output)
    assert len(diff["added"]) == 2 and diff["removed"] == [] and diff["changed"] == []

    # A pulled pair sent back with another mask corrects that mask.
    (out / "masks" / "synth_s1_00000.png").write_bytes((out / "masks" / "synth_s1_00001.png").read_bytes())
    refused = cli("data", "ingest", out)  # a folder pulled from an older version would look the same
    assert refused.exit_code == 1 and "pass --correct-masks to replace the stored masks" in refused.output
    corrected = cli("data", "ingest", out, "--correct-masks")
    assert corrected.exit_code == 0, corrected.output
    assert (
        "0 pairs added" in corrected.output
        and "1 stored mask(s) corrected (synth_s1_00000)" in corrected.output
    )
    v3 = corrected.output.strip().splitlines()[-1]
    assert json.loads(cli("data", "diff", v2, v3, "--json").output)["changed"] == ["synth_s1_00000"]

    # A mask edited again and pulled over before it was ingested: put back, and said so by name.
    edited = out / "masks" / "synth_s1_00001.png"
    edited.write_bytes(b"a correction in progress")
    again = cli("data", "pull", v3, out)
    said = " ".join(again.output.split())
    assert again.exit_code == 0 and "1 files fetched" in said
    assert (
        f"replaced 1 file(s) that differed from version {v3} (edited since it was pulled, or damaged)" in said
    )
    assert f"{edited}; to keep a corrected mask, ingest it first" in said
    assert edited.read_bytes().startswith(b"\x89PNG")

    # Without data/dataset.json the store is not empty, and the new version builds on none of it.
    (project_dir / "data" / "dataset.json").unlink()
    alone = cli("data", "ingest", make_batch("c", count=2, seed=3))
    assert "2 pairs added to no earlier version (data/dataset.json named none)" in " ".join(
        alone.output.split()
    )


def test_conflict_is_one_line_and_writes_nothing(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    assert cli("data", "ingest", make_batch("a", count=3, seed=1)).exit_code == 0
    clash = make_batch("b", count=3, seed=4)
    for kind in ("images", "masks"):
        for p in (clash / kind).iterdir():
            p.rename(p.with_name(p.name.replace("s4", "s1")))
    result = cli("data", "ingest", clash)
    assert result.exit_code == 1
    assert "already in version" in result.output and "nothing was written" in result.output
    assert len(json.loads(cli("data", "versions", "--json").output)) == 1


def test_a_store_url_changed_since_the_pointer_names_the_store_it_was_written_for(
    cli: Callable[..., Any],
    project_dir: Path,
    make_batch: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """data/dataset.json names a version of .wms/store; store.url now names another store."""
    assert cli("data", "ingest", make_batch("a", count=3, seed=1)).exit_code == 0
    monkeypatch.setenv("WMS_STORE__URL", ".wms/moved")
    result = cli("data", "ingest", make_batch("b", count=3, seed=2))
    assert result.exit_code == 1
    written = "data/dataset.json was written for the store .wms/store and store.url is .wms/moved"
    assert written in result.output
    assert "set store.url (or WMS_STORE__URL) to .wms/store" in result.output


def test_unknown_version_is_a_clear_error(cli: Callable[..., Any], project_dir: Path, tmp_path: Path) -> None:
    result = cli("data", "pull", "feedbeef0000", tmp_path / "out")
    assert result.exit_code == 2
    assert "not in the store" in result.output and "wms data versions" in result.output


def test_a_missing_blob_is_one_line_and_ingesting_the_pairs_again_restores_it(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    batch = make_batch("a", count=3, seed=1)
    version = cli("data", "ingest", batch).output.strip().splitlines()[-1]
    lost = sorted((batch / "masks").iterdir())[0]
    digest = hashlib.sha256(lost.read_bytes()).hexdigest()
    (project_dir / ".wms" / "store" / "blobs" / digest[:2] / digest).unlink()

    out = tmp_path / "out"
    result = cli("data", "pull", version, out)
    assert result.exit_code == 1
    assert f"missing the mask of pair {lost.stem!r}" in result.stderr and "wms data ingest" in result.stderr
    assert not out.exists()

    again = cli("data", "ingest", batch)
    assert again.exit_code == 0 and "restored 1 blob(s)" in again.output
    assert cli("data", "pull", version, out).exit_code == 0
    assert files(out) == files(batch)


@pytest.mark.parametrize("where", ["out", "out/images"])
def test_pull_into_a_file_is_one_line(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path], tmp_path: Path, where: str
) -> None:
    version = cli("data", "ingest", make_batch("a", count=2, seed=1)).output.strip().splitlines()[-1]
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text("a file, not a folder")
    result = cli("data", "pull", version, tmp_path / "out")
    assert result.exit_code == 1
    assert f"cannot pull version {version} into {tmp_path / 'out'}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_test_image_copied_under_a_new_name_is_refused(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    base = make_batch("a", count=20, seed=1)
    v1 = cli("data", "ingest", base).output.strip().splitlines()[-1]
    manifest = json.loads((project_dir / ".wms" / "store" / "versions" / f"{v1}.json").read_text())
    test_id = next(pid for pid, entry in manifest["pairs"].items() if entry["split"] == "test")
    batch = make_batch("b", count=2, seed=2)
    for kind in ("images", "masks"):  # under a new name it would get a split of its own
        [original] = (base / kind).glob(f"{test_id}.*")
        (batch / kind / f"copy{original.suffix}").write_bytes(original.read_bytes())
    result = cli("data", "ingest", batch)
    assert result.exit_code == 1
    assert f"'copy' in {batch} has the same image as {test_id!r} (in version {v1})" in result.stderr
    assert len(json.loads(cli("data", "versions", "--json").output)) == 1


def test_ids_that_differ_only_in_letter_case_are_one_line(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    batch = make_batch("a", count=3, seed=1)
    for kind in ("images", "masks"):
        p = next((batch / kind).glob("synth_s1_00002.*"))
        p.rename(p.with_name("SYNTH_S1_00001" + p.suffix))
    result = cli("data", "ingest", batch)
    assert result.exit_code == 1
    assert "'SYNTH_S1_00001'" in result.stderr and "'synth_s1_00001'" in result.stderr
    assert "only in letter case" in result.stderr
    assert json.loads(cli("data", "versions", "--json").output) == []


def test_raw_photos_are_not_ingested(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    from PIL import Image

    batch = make_batch("raw", count=4, seed=1)
    for kind in ("images", "masks"):  # 4:3 JPEG photos with JPEG (non-binary) masks, as they come
        for p in list((batch / kind).iterdir()):
            with Image.open(p) as img:
                img.resize((96, 72)).save(p.with_suffix(".jpg"), quality=90)
            p.unlink()
    result = cli("data", "ingest", batch)
    assert result.exit_code == 1
    assert "wrong_size" in result.stderr and f"wms data prepare {batch} OUT" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert json.loads(cli("data", "versions", "--json").output) == []
    assert not (project_dir / "data" / "dataset.json").exists()

    prepared = project_dir / "prepared"
    assert cli("data", "prepare", batch, prepared, "--size", "64").exit_code == 0
    assert cli("data", "ingest", prepared).exit_code == 0


def test_images_without_masks_are_not_sent_to_prepare(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    """`wms data prepare` cannot add a mask: the refusal says to fix the files instead."""
    batch = make_batch("half", count=4, seed=2)
    next((batch / "masks").iterdir()).unlink()
    result = cli("data", "ingest", batch)
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "(missing_mask); fix the files it lists" in result.stderr
    assert "wms data prepare" not in result.stderr


def test_versions_lists_the_latest_without_reading_older_manifests(
    cli: Callable[..., Any], project_dir: Path
) -> None:
    folder = project_dir / ".wms" / "store" / "versions"
    folder.mkdir(parents=True)
    ids = [f"{i:012x}" for i in range(25)]  # a store that gains a version with every batch
    for i, vid in enumerate(ids):
        manifest = {
            "version": vid,
            "parent": ids[i - 1] if i else None,
            "created_at": f"2026-01-{i + 1:02d}T00:00:00+00:00",
            "counts": {"pairs": i},
            "pairs": {},
        }
        path = folder / f"{vid}.json"
        path.write_text(json.dumps(manifest) if i else "{")  # an old manifest nobody reads any more
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))

    listed = cli("data", "versions", "--json")
    assert listed.exit_code == 0, listed.output
    assert [v["id"] for v in json.loads(listed.output)] == ids[5:]
    assert [v["id"] for v in json.loads(cli("data", "versions", "--last", "3", "--json").output)] == ids[22:]
    shown = cli("data", "versions", "--last", "3")
    assert shown.exit_code == 0, shown.output
    assert "22 older version(s) not shown" in shown.output

    every = cli("data", "versions", "--all")
    assert every.exit_code == 1 and f"the manifest of version {ids[0]}" in every.output


def test_progress_leaves_nothing_in_a_log(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    # stderr is no terminal here, as in CI or `2> log`: the bars stay away, and so do their empty lines.
    batch = make_batch("a", count=4, seed=1)
    for args in (("data", "validate", batch), ("data", "ingest", batch), ("data", "synth", tmp_path / "s")):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        assert result.stderr == "", args
    version = cli("data", "versions", "--json").output
    pulled = cli("data", "pull", json.loads(version)[0]["id"], tmp_path / "out")
    assert pulled.exit_code == 0 and pulled.stderr == ""


def test_a_bar_on_a_terminal_shows_how_many_of_how_many(
    cli: Callable[..., Any],
    project_dir: Path,
    make_batch: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io
    import re

    from rich.console import Console

    from wms.cli import _common

    terminal = io.StringIO()
    monkeypatch.setattr(_common, "err_console", Console(file=terminal, force_terminal=True, markup=False))
    batch = make_batch("a", count=6, seed=1)
    assert cli("data", "ingest", batch).exit_code == 0
    assert cli("data", "prepare", batch, project_dir / "prepared", "--size", "64").exit_code == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.getvalue())
    # The totals were known and not shown: "12/?" blobs, "6/?" pairs.
    assert re.search(r"uploading blobs .* 12/12", text), text
    assert re.search(r"validating .* 6/6", text) and re.search(r"preparing .* 6/6", text), text
    assert not re.search(r"\b(12|6)/\?", text)  # no finished count without its total


def test_an_older_mask_is_put_back_only_when_its_pair_is_named(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    """A correction that turned out wrong: the labeller wants the mask the pair had before."""
    first = make_batch("a", count=4, seed=1)
    assert cli("data", "ingest", first).exit_code == 0
    pid, fix, back = "synth_s1_00000", tmp_path / "fix", tmp_path / "back"
    for folder, mask in ((fix, "synth_s1_00001"), (back, pid)):
        for kind, source in (("images", pid), ("masks", mask)):
            (folder / kind).mkdir(parents=True)
            (folder / kind / f"{pid}.png").write_bytes((first / kind / f"{source}.png").read_bytes())
    fixed = cli("data", "ingest", fix, "--correct-masks")
    assert fixed.exit_code == 0, fixed.output
    v2 = fixed.output.strip().splitlines()[-1]

    refused = cli("data", "ingest", back, "--correct-masks")
    said = " ".join(refused.output.split())
    assert refused.exit_code == 1 and "Traceback" not in said, said
    assert f"{pid} (its mask is the one version" in said
    assert (
        "to put an older mask back on purpose, name its pair: `wms data ingest DIR --restore-masks ID,…`"
        in said
    )
    assert "a last line `Restore-masks: ID, …` in its head commit's message" in said
    assert json.loads((project_dir / "data" / "dataset.json").read_text())["version"] == v2  # nothing written

    restored = cli("data", "ingest", back, "--restore-masks", pid)
    assert restored.exit_code == 0, restored.output
    assert f"1 stored mask(s) corrected ({pid}, 1 of them put back to an earlier mask)" in restored.output
    v3 = restored.output.strip().splitlines()[-1]
    listed = json.loads(cli("data", "versions", "--json").output)
    assert listed[-1]["id"] == v3 and listed[-1]["parent"] == v2  # v1's pairs again, after v2
    out = tmp_path / "pulled"
    assert cli("data", "pull", v3, out).exit_code == 0
    assert files(out)[f"masks/{pid}.png"] == files(first)[f"masks/{pid}.png"]
