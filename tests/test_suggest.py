"""`wms data suggest`: the photos the model is least sure of, never the same photo twice, as a batch."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from PIL import Image

from wms.acquisition import select
from wms.data.synth import synthesize
from wms.inbox import Photo
from wms.labelstudio import result_mask
from wms.suggest import Candidate, descriptor, score_photos
from wms.train.spec import ModelSpec

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "labelstudio-tasks.schema.json").read_text())


class RedIsForeground:
    """A stand-in model: a pixel's probability is its red value, so the picture decides how sure it is."""

    spec = ModelSpec("stub", 32, 0.5)

    def probabilities(self, batch_uint8: np.ndarray) -> np.ndarray:
        return batch_uint8[:, :1].astype(np.float32) / 255


class LeftQuarter:
    """A stand-in model sure of a window in the left quarter of every photo, mirrored or not."""

    spec = ModelSpec("stub", 32, 0.5)

    def probabilities(self, batch_uint8: np.ndarray) -> np.ndarray:
        probs = np.zeros((len(batch_uint8), 1, 32, 32), dtype=np.float32)
        probs[:, :, 8:24, :8] = 1.0
        return probs


def _photo(folder: Path, name: str, red: np.ndarray) -> Photo:
    rgb = np.zeros((*red.shape, 3), dtype=np.uint8)
    rgb[..., 0] = red
    path = folder / f"{name}.png"
    Image.fromarray(rgb).save(path)
    return Photo(path, hashlib.sha256(path.read_bytes()).hexdigest())


def test_a_photo_the_model_is_unsure_of_ranks_above_a_sure_one(tmp_path: Path) -> None:
    crisp = np.zeros((64, 64), dtype=np.uint8)
    crisp[20:40, 10:50] = 255  # one window, every pixel 0 or 1
    murky = np.random.default_rng(0).integers(100, 156, (64, 64)).astype(np.uint8)  # all near 0.5
    sure, unsure = _photo(tmp_path, "sure", crisp), _photo(tmp_path, "unsure", murky)
    ranked, unreadable = score_photos(RedIsForeground(), [sure, unsure])
    assert not unreadable
    assert [c.name for c in ranked] == ["unsure", "sure"]
    assert ranked[0].score > 0.9 and ranked[1].score < 0.5
    assert ranked[1].uncertainty["verdict"] == "sure" and ranked[1].disagreement == 0


def test_the_mirrored_opinion_raises_the_score_where_it_disagrees(tmp_path: Path) -> None:
    """Sure of its mask both times, but the mirrored photo's mask lands elsewhere: worth a label."""
    (candidate,), _ = score_photos(LeftQuarter(), [_photo(tmp_path, "p", np.zeros((64, 64), np.uint8))])
    assert candidate.uncertainty["verdict"] == "sure" and candidate.uncertainty["score"] < 0.5
    assert candidate.disagreement == 1 and candidate.score == 1


def _candidate(name: str, score: float, where: np.ndarray, rng: np.random.Generator) -> Candidate:
    return Candidate(
        photo=Photo(Path(f"{name}.png"), name),
        score=score,
        uncertainty={"score": score},
        disagreement=0.0,
        foreground=0.1,
        size=(64, 64),
        dhash=int(rng.integers(0, 2**63)),  # far apart: none is a near-duplicate of another
        descriptor=(where + rng.normal(0, 0.05, where.shape)).astype(np.float32),
    )


def test_diverse_spreads_the_batch_over_kinds_of_photo_where_top_takes_one_kind() -> None:
    """Eight unsure photos of one kind and four surer ones of another: `top` takes two of the first
    kind; `diverse` one of each, still the most unsure first."""
    rng = np.random.default_rng(3)
    kind_a, kind_b = np.eye(2, 512)[0], np.eye(2, 512)[1]
    pool = [_candidate(f"a{i}", 0.9 - i / 100, kind_a, rng) for i in range(8)]
    pool += [_candidate(f"b{i}", 0.4 - i / 100, kind_b, rng) for i in range(4)]
    top = select(pool, 2, strategy="top")
    assert [c.name for c in top.chosen] == ["a0", "a1"]
    diverse = select(pool, 2, strategy="diverse")
    assert [c.name[0] for c in diverse.chosen] == ["a", "b"]
    assert len(select(pool, 6, strategy="diverse").chosen) == 6
    assert {c.name for c in select(pool, 20, strategy="diverse").chosen} == {c.name for c in pool}


def test_power_draws_the_unsure_more_often_and_repeats_for_a_seed_where_random_does_not_lean() -> None:
    rng = np.random.default_rng(4)
    pool = [_candidate(f"a{i}", 0.9, np.eye(1, 512)[0], rng) for i in range(6)]
    pool += [_candidate(f"b{i}", 0.1, np.eye(1, 512)[0], rng) for i in range(6)]
    draws = [c.name[0] for seed in range(40) for c in select(pool, 3, strategy="power", seed=seed).chosen]
    assert len(draws) == 120 and draws.count("a") > 0.75 * len(draws)  # expected about 0.9
    assert draws.count("b") > 0  # the sure ones keep a chance
    first, again = (select(pool, 3, strategy="power", seed=7).chosen for _ in range(2))
    assert [c.name for c in first] == [c.name for c in again]
    uniform = [c.name[0] for seed in range(40) for c in select(pool, 3, strategy="random", seed=seed).chosen]
    assert 0.35 * len(uniform) < uniform.count("a") < 0.65 * len(uniform)  # the score aside: about half


def test_band_passes_over_the_most_unsure_fifth_and_takes_the_next() -> None:
    """Ten photos, most unsure first: `band` passes over the first two (a fifth) and takes the next
    three; asked for nine it passes over one only, so the batch is still full."""
    rng = np.random.default_rng(5)
    pool = [_candidate(f"p{i}", 0.95 - i / 20, np.eye(1, 512)[0], rng) for i in range(10)]
    band = select(pool, 3, strategy="band")
    assert [c.name for c in band.too_unsure] == ["p0", "p1"]
    assert [c.name for c in band.chosen] == ["p2", "p3", "p4"]
    nine = select(pool, 9, strategy="band")
    assert [c.name for c in nine.too_unsure] == ["p0"] and len(nine.chosen) == 9
    assert [c.name for c in select(pool, 12, strategy="band").chosen] == [c.name for c in pool]


def test_the_descriptor_tells_where_the_window_is() -> None:
    """Two shots of one scene (other sensor noise) with the window in one place are near; the same
    shot with the window seen elsewhere is far."""
    rng = np.random.default_rng(1)
    scene = np.linspace(40, 200, 64)[None, :, None] + np.zeros((64, 64, 3))
    left, right = np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32)
    left[20:40, 4:30], right[20:40, 34:60] = 1.0, 1.0

    def shot() -> Image.Image:
        return Image.fromarray(np.clip(scene + rng.normal(0, 12, scene.shape), 0, 255).astype(np.uint8))

    same_place = np.linalg.norm(descriptor(shot(), left) - descriptor(shot(), left))
    other_place = np.linalg.norm(descriptor(p := shot(), left) - descriptor(p, right))
    assert other_place > 4 * same_place, (other_place, same_place)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Ten synthetic photos, a byte copy and a pixel-identical PNG of two, and files that are not photos."""
    synthesize(tmp_path / "synth", count=10, size=64, seed=5)
    folder = tmp_path / "photos"
    shutil.copytree(tmp_path / "synth" / "images", folder)
    first, second = sorted(folder.glob("*.png"))[:2]
    shutil.copyfile(first, folder / "copy-of-first.png")
    with Image.open(second) as img:
        img.save(folder / "second-again.png", compress_level=9)  # other bytes, the same pixels
    assert (folder / "second-again.png").read_bytes() != second.read_bytes()
    (folder / "notes.txt").write_text("not a photo")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def _pixels(path: Path) -> str:
    with Image.open(path) as img:
        return hashlib.sha256(np.asarray(img.convert("RGB")).tobytes()).hexdigest()


def test_a_batch_never_holds_two_pixel_identical_photos_and_imports_into_label_studio(
    cli: Callable[..., Any], project_dir: Path, exported_model: Path, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "batch"
    result = cli("data", "suggest", "--count", 20, "--from", photos, "--out", out, "--model", exported_model)
    assert result.exit_code == 0, result.output + result.stderr
    assert "1 not a photo" in result.output and "1 could not be decoded" in result.output

    chosen = sorted((out / "images").iterdir())
    assert len({_pixels(p) for p in chosen}) == len(chosen) >= 5
    ranking = json.loads((out / "ranking.json").read_text())
    passed_over = {d["name"] for d in ranking["same_bytes"] + ranking["near_duplicates"]}
    names = {p.stem for p in chosen}
    for pair in ({"synth_s5_00000", "copy-of-first"}, {"synth_s5_00001", "second-again"}):
        assert len(pair & names) == 1 and len(pair & passed_over) == 1, (pair, names)
    with (out / "ranking.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and len(rows) == len(chosen)
    assert not list(tmp_path.glob(".batch.*"))  # the staging folder was renamed, not left behind

    tasks = json.loads((out / "labelstudio.json").read_text())
    jsonschema.validate(tasks, SCHEMA)
    assert len(tasks) == len(chosen)
    for task in tasks:
        assert task["data"]["image"].endswith(tuple(p.name for p in chosen))
        (prediction,) = task["predictions"]
        ids = [r["id"] for r in prediction["result"]]
        assert len(set(ids)) == len(ids)
        with Image.open(out / "prelabels" / f"{task['data']['name']}.png") as img:
            prelabel = np.asarray(img) > 127
        if not prelabel.any():
            continue
        decoded = result_mask(prediction["result"])
        assert (decoded & prelabel).sum() / (decoded | prelabel).sum() >= 0.95, task["data"]["name"]

    # Labelled as pre-labelled (the predictions accepted), the first one skipped: back as pairs.
    for task in tasks:
        task["annotations"] = [{"result": task["predictions"][0]["result"], "was_cancelled": False}]
    tasks[0]["annotations"][0]["was_cancelled"] = True
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    back = cli("data", "from-labelstudio", tmp_path / "export.json", "--batch", out, "--out", tmp_path / "in")
    assert back.exit_code == 0, back.output + back.stderr
    assert f"left out {tasks[0]['data']['name']}: not labelled" in back.output
    masks = sorted((tmp_path / "in" / "masks").iterdir())
    assert [m.stem for m in masks] == sorted(p.stem for p in (tmp_path / "in" / "images").iterdir())
    assert len(masks) == len(chosen) - 1 and tasks[0]["data"]["name"] not in {m.stem for m in masks}

    # Exported before anyone labelled a photo: said so, and no empty folders are left behind.
    unlabelled = tmp_path / "unlabelled.json"
    unlabelled.write_text(json.dumps([{**task, "annotations": []} for task in tasks]))
    none = cli("data", "from-labelstudio", unlabelled, "--batch", out, "--out", tmp_path / "no")
    assert none.exit_code == 1 and "no labelled photo" in none.output and "nothing was written" in none.output
    assert not (tmp_path / "no").exists()


def test_a_batch_holds_photos_every_browser_shows_and_comes_back_as_valid_pairs(
    cli: Callable[..., Any], project_dir: Path, exported_model: Path, tmp_path: Path
) -> None:
    """Label Studio shows a photo through the browser, and Chrome and Firefox show no TIFF: a TIFF,
    WEBP or BMP photo goes into the batch as the PNG of its upright 8-bit pixels (a 16-bit TIFF
    scaled, not clipped), a JPEG or PNG as it came."""
    from wms.train.preprocess import open_image

    synthesize(tmp_path / "synth", count=6, size=64, seed=8)
    *sources, last = sorted((tmp_path / "synth" / "images").glob("*.png"))
    folder = tmp_path / "photos"
    folder.mkdir()
    written = {}
    for source, (name, kind) in zip(
        sources, [("a", "TIFF"), ("b", "WEBP"), ("c", "BMP"), ("d", "JPEG"), ("e", "PNG")], strict=True
    ):
        with Image.open(source) as img:
            suffix = {"TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp", "JPEG": ".jpeg", "PNG": ".png"}[kind]
            img.convert("RGB").save(written.setdefault(name, folder / f"{name}{suffix}"), kind)
    grey = np.asarray(Image.open(last).convert("L"), dtype=np.uint16) * 257  # 16 bits, 0-65535
    Image.fromarray(grey).save(written.setdefault("f", folder / "f.tif"), "TIFF")

    out = tmp_path / "batch"
    made = cli("data", "suggest", "-n", 6, "--from", folder, "--out", out, "--model", exported_model)
    assert made.exit_code == 0, made.output + made.stderr
    batch = {p.stem: p for p in (out / "images").iterdir()}
    assert {stem: p.suffix for stem, p in batch.items()} == {
        "a": ".png", "b": ".png", "c": ".png", "d": ".jpg", "e": ".png", "f": ".png"
    }  # fmt: skip
    assert batch["d"].read_bytes() == written["d"].read_bytes()
    assert batch["e"].read_bytes() == written["e"].read_bytes()
    for stem in "abcf":
        shown = np.asarray(open_image(written[stem]))
        assert np.array_equal(np.asarray(Image.open(batch[stem])), shown), stem
    assert np.asarray(Image.open(batch["f"])).max() > 200  # scaled to 8 bits, not clipped to white
    tasks = json.loads((out / "labelstudio.json").read_text())
    assert sorted(t["data"]["image"].rpartition("/")[2] for t in tasks) == sorted(
        p.name for p in batch.values()
    )

    for task in tasks:
        task["annotations"] = [{"result": task["predictions"][0]["result"], "was_cancelled": False}]
        if not task["annotations"][0]["result"]:  # an empty pre-label: the labeller draws the window
            drawn = {"type": "polygonlabels", "original_width": 64, "original_height": 64}
            drawn["value"] = {
                "points": [[20.0, 40.0], [80.0, 40.0], [80.0, 60.0]],
                "polygonlabels": ["counter"],
            }
            task["annotations"][0]["result"] = [drawn]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    back = cli("data", "from-labelstudio", tmp_path / "export.json", "--batch", out, "--out", tmp_path / "in")
    assert back.exit_code == 0, back.output + back.stderr
    checked = cli("data", "validate", tmp_path / "in")
    assert checked.exit_code == 0, checked.output
    assert len(list((tmp_path / "in" / "images").iterdir())) == 6


def test_the_import_file_names_each_photo_as_label_studio_decodes_its_url(
    cli: Callable[..., Any], project_dir: Path, exported_model: Path, tmp_path: Path
) -> None:
    """Label Studio reads a local file's path from the URL's query, decoded: a `+` unencoded reads
    as a space, a `#` ends the URL, a `&` starts another parameter, so such a photo showed nothing."""
    from urllib.parse import parse_qs, urlsplit

    synthesize(tmp_path / "synth", count=3, size=64, seed=9)
    folder = tmp_path / "photos"
    folder.mkdir()
    names = ["meter #1 & co.png", "a+b.png", "50%.png"]
    for source, name in zip(sorted((tmp_path / "synth" / "images").glob("*.png")), names, strict=True):
        shutil.copyfile(source, folder / name)
    out = tmp_path / "my batch"
    made = cli("data", "suggest", "-n", 3, "--from", folder, "--out", out, "--model", exported_model)
    assert made.exit_code == 0, made.output + made.stderr
    tasks = json.loads((out / "labelstudio.json").read_text())
    named = set()
    for task in tasks:
        (path,) = parse_qs(urlsplit(task["data"]["image"]).query)["d"]  # as Label Studio's server reads it
        assert (tmp_path / path).is_file(), path
        named.add(Path(path).name)
    assert named == set(names)


@pytest.mark.parametrize("strategy", ["band", "diverse", "top", "power", "random"])
def test_each_strategy_writes_a_batch_of_the_count_asked(
    cli: Callable[..., Any],
    project_dir: Path,
    exported_model: Path,
    photos: Path,
    tmp_path: Path,
    strategy: str,
) -> None:
    out = tmp_path / "batch"
    args = ["--count", 3, "--from", photos, "--out", out, "--model", exported_model, "--strategy", strategy]
    result = cli("data", "suggest", *args)
    assert result.exit_code == 0, result.output + result.stderr
    assert len(list((out / "images").iterdir())) == len(list((out / "prelabels").iterdir())) == 3
    ranking = json.loads((out / "ranking.json").read_text())
    assert ranking["strategy"] == strategy and len(ranking["chosen"]) == 3
    scores = [c["score"] for c in ranking["chosen"]]
    assert scores == sorted(scores, reverse=True)
    if strategy == "band":  # the most unsure fifth of the distinct photos is listed, not chosen
        distinct = ranking["scored"] - len(ranking["same_bytes"]) - len(ranking["near_duplicates"])
        skipped = [c["score"] for c in ranking["too_unsure"]]
        assert len(skipped) == round(0.2 * distinct) > 0 and min(skipped) >= max(scores)
        assert f"passed over the {len(skipped)} most unsure photo(s)" in result.output


def test_an_under_confident_model_is_told_and_its_batch_falls_back_to_entropy(
    cli: Callable[..., Any],
    project_dir: Path,
    exported_model: Path,
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dataclasses

    import wms.serve.fetch

    load = wms.serve.fetch.load_model

    class Centre(LeftQuarter):
        """Sure of a window in the middle of every photo, mirrored or not: every score 0."""

        def probabilities(self, batch_uint8: np.ndarray) -> np.ndarray:
            return np.roll(super().probabilities(batch_uint8), 12, axis=3)

    class Squashed(Centre):
        """Sees the same window with probabilities squeezed into 0.3-0.8: sure of no pixel."""

        def probabilities(self, batch_uint8: np.ndarray) -> np.ndarray:
            return 0.3 + 0.5 * super().probabilities(batch_uint8)

    def serving(model: Any) -> Callable[..., Any]:
        return lambda *a, **k: dataclasses.replace(load(*a, **k), segmenter=model)

    args = ["--count", 3, "--from", photos, "--model", exported_model]
    monkeypatch.setattr(wms.serve.fetch, "load_model", serving(Centre()))
    sure = cli("data", "suggest", *args, "--out", tmp_path / "sure")
    assert sure.exit_code == 0 and "score ranks none" not in sure.output, sure.output
    monkeypatch.setattr(wms.serve.fetch, "load_model", serving(Squashed()))
    unsure = cli("data", "suggest", *args, "--out", tmp_path / "unsure")
    assert unsure.exit_code == 0, unsure.output + unsure.stderr
    assert "the score ranks none of these photos: all 12 score 1" in unsure.output
    assert "ranked by mean pixel entropy" in unsure.output
    ranking = json.loads((tmp_path / "unsure" / "ranking.json").read_text())
    assert {c["score"] for c in ranking["chosen"]} == {1.0} and len(ranking["chosen"]) == 3


def test_undecided_only_when_every_photo_scores_one(tmp_path: Path) -> None:
    from wms.suggest import undecided

    dim = np.full((32, 32), 180, dtype=np.uint8)  # probability 0.71: a window, but not one sure pixel
    crisp = np.zeros((32, 32), dtype=np.uint8)
    crisp[8:24, 4:28] = 255
    faint = [_photo(tmp_path, f"dim{i}", dim - i) for i in range(2)]
    ranked, _ = score_photos(RedIsForeground(), faint)
    assert [c.score for c in ranked] == [1.0, 1.0] and undecided(ranked)
    ranked, _ = score_photos(RedIsForeground(), [*faint, _photo(tmp_path, "crisp", crisp)])
    assert not undecided(ranked) and not undecided(ranked[:1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "0"], "at least one photo"),
        (["--count", "3", "--out", "{file}"], "is a file"),
        (["--count", "3", "--from", "{empty}"], "nothing to suggest"),
        (["--count", "3", "--from", "inbox"], "nothing was captured"),
        (["--count", "3", "--model", "production"], "cannot load model 'production'"),
        (["--count", "3", "--strategy", "best"], "choose one of power, band, diverse, top, random"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    cli: Callable[..., Any], project_dir: Path, photos: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "empty").mkdir()
    values = {"file": tmp_path / "file", "empty": tmp_path / "empty"}
    args = [a.format(**values) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "batch")]
    if "--from" not in args:
        args += ["--from", str(photos)]
    result = cli("data", "suggest", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "batch").exists()


def test_a_dataset_folder_with_a_readme_is_read_from_its_images(tmp_path: Path) -> None:
    """`--from DATASET` and `--reference DATASET`: a README beside images/ and masks/ is no photo."""
    from wms.inbox import scan_photos

    synthesize(tmp_path / "dataset", count=3, size=32, seed=1)
    (tmp_path / "dataset" / "README.md").write_text("# meters\n")
    scan = scan_photos(tmp_path / "dataset")
    assert scan.folder == tmp_path / "dataset" / "images" and len(scan.photos) == 3 and not scan.skipped


def test_the_capture_inbox_is_read_with_its_metadata(tmp_path: Path) -> None:
    """The layout wms.serve.capture writes: images/<id>.jpg, masks/<id>.png, meta/<id>.json."""
    from wms.inbox import scan_photos

    inbox = tmp_path / "inbox"
    for sub in ("images", "masks", "meta"):
        (inbox / sub).mkdir(parents=True)
    Image.new("RGB", (40, 30), (90, 90, 90)).save(inbox / "images" / "ab12.jpg")
    Image.new("L", (40, 30), 0).save(inbox / "masks" / "ab12.png")
    (inbox / "meta" / "ab12.json").write_text('{"time": "2026-11-30T10:00:00+00:00", "model_version": "3"}')
    scan = scan_photos(inbox)
    assert [p.name for p in scan.photos] == ["ab12"] and scan.without_meta == 0 and not scan.skipped
    assert scan.photos[0].meta["model_version"] == "3" and scan.photos[0].time.day == 30


def test_labelled_photos_come_back_as_pairs_the_pipeline_takes(
    cli: Callable[..., Any], project_dir: Path, exported_model: Path, tmp_path: Path
) -> None:
    """Captured photos keep the camera's size (96 px here); the pairs written back are at data.size
    (64), so the validation the pipeline runs on a pushed batch takes them."""
    synthesize(tmp_path / "raw", count=6, size=96, seed=4)
    out = tmp_path / "batch"
    made = cli(
        "data", "suggest", "-n", 3, "--from", tmp_path / "raw", "--out", out, "--model", exported_model
    )
    assert made.exit_code == 0, made.output + made.stderr
    tasks = json.loads((out / "labelstudio.json").read_text())
    window = [[20.0, 40.0], [80.0, 40.0], [80.0, 60.0], [20.0, 60.0]]
    for task in tasks:  # a labeller draws the window on each photo
        drawn = {"type": "polygonlabels", "original_width": 96, "original_height": 96}
        drawn["value"] = {"points": window, "polygonlabels": ["counter"]}
        task["annotations"] = [{"result": [drawn], "was_cancelled": False}]
    (tmp_path / "export.json").write_text(json.dumps(tasks))

    back = cli("data", "from-labelstudio", tmp_path / "export.json", "--batch", out)
    assert back.exit_code == 0, back.output + back.stderr
    incoming = project_dir / "data" / "incoming"
    checked = cli("data", "validate", incoming)
    assert checked.exit_code == 0, checked.output
    assert "valid" in checked.output and "--any-size" not in back.output
    for mask in (incoming / "masks").iterdir():
        with Image.open(mask) as img:
            assert img.size == (64, 64) and 0.1 < (np.asarray(img) > 127).mean() < 0.2

    # The same export again changes nothing; labels changed since are not written over silently.
    again = cli("data", "from-labelstudio", tmp_path / "export.json", "--batch", out)
    assert again.exit_code == 0, again.output + again.stderr
    before = {m.name: m.read_bytes() for m in (incoming / "masks").iterdir()}
    for task in tasks:
        task["annotations"][0]["result"][0]["value"]["points"] = [[10.0, 10.0], [50.0, 10.0], [50.0, 30.0]]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    refused = cli("data", "from-labelstudio", tmp_path / "export.json", "--batch", out)
    assert refused.exit_code == 2 and "nothing was written: pass --overwrite" in " ".join(
        refused.stderr.split()
    )
    assert {m.name: m.read_bytes() for m in (incoming / "masks").iterdir()} == before
    replaced = cli("data", "from-labelstudio", tmp_path / "export.json", "--batch", out, "--overwrite")
    assert replaced.exit_code == 0, replaced.output + replaced.stderr
    after = {m.name: m.read_bytes() for m in (incoming / "masks").iterdir()}
    assert after.keys() == before.keys() and all(after[n] != before[n] for n in before)


def test_photos_already_in_the_dataset_are_not_suggested_again(
    cli: Callable[..., Any], project_dir: Path, exported_model: Path, tmp_path: Path
) -> None:
    """A captured photo labelled and pushed is a pair of the dataset version main points at, under
    the photo's name; the next suggest from the same inbox passes over it instead of offering it again."""
    synthesize(tmp_path / "labelled", count=6, size=64, seed=5)
    ingested = cli("data", "ingest", tmp_path / "labelled")
    assert ingested.exit_code == 0, ingested.output + ingested.stderr
    synthesize(tmp_path / "new", count=4, size=64, seed=6)
    inbox = tmp_path / "inbox"
    shutil.copytree(tmp_path / "labelled" / "images", inbox)
    for photo in (tmp_path / "new" / "images").iterdir():
        shutil.copyfile(photo, inbox / photo.name)

    out = tmp_path / "batch"
    args = ["-n", 10, "--from", inbox, "--out", out, "--model", exported_model, "--strategy", "top"]
    result = cli("data", "suggest", *args)
    assert result.exit_code == 0, result.output + result.stderr
    chosen = {p.stem for p in (out / "images").iterdir()}
    assert chosen and all(name.startswith("synth_s6_") for name in chosen), chosen
    assert "passed over 6 photo(s) already labelled" in result.output


def test_the_clusters_inbox_on_s3_gives_a_labelling_batch(
    cli: Callable[..., Any],
    project_dir: Path,
    exported_model: Path,
    tmp_path: Path,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The chart's pods' captures reach s3://.../inbox (through their node); suggest ranks those photos
    where it had said "copy it here first" and exited, and a bucket it cannot read is one line."""
    import boto3

    from wms.inbox import copy_inbox

    synthesize(tmp_path / "captured", count=8, size=64, seed=7)
    s3 = boto3.client("s3")
    for photo in sorted((tmp_path / "captured" / "images").iterdir()):  # the capture's layout
        s3.put_object(Bucket=s3_bucket, Key=f"wms/inbox/images/{photo.stem}.jpg", Body=photo.read_bytes())
        meta = json.dumps({"captured_at": "2026-11-30T10:00:00Z", "model_version": "1"})
        s3.put_object(Bucket=s3_bucket, Key=f"wms/inbox/meta/{photo.stem}.json", Body=meta.encode())
        s3.put_object(Bucket=s3_bucket, Key=f"wms/inbox/masks/{photo.stem}.png", Body=b"mask")
    s3.put_object(Bucket=s3_bucket, Key="wms/inbox/images/half.jpg.tmp", Body=b"being written")
    url = f"s3://{s3_bucket}/wms/inbox"
    monkeypatch.setenv("WMS_SERVE__CAPTURE_DIR", url)

    out = tmp_path / "batch"
    result = cli("data", "suggest", "-n", 3, "--out", out, "--model", exported_model, "--strategy", "top")
    assert result.exit_code == 0, result.output + result.stderr
    assert f"8 photo(s) in {url}" in result.output
    assert len(list((out / "images").iterdir())) == len(list((out / "prelabels").iterdir())) == 3
    assert json.loads((out / "ranking.json").read_text())["source"] == url
    monkeypatch.delenv("WMS_SERVE__CAPTURE_DIR")
    named = cli(
        "data", "suggest", "-n", 3, "--from", url, "--out", tmp_path / "named", "--model", exported_model
    )
    assert named.exit_code == 0, named.output + named.stderr  # was: "s3:/... does not exist"
    assert json.loads((tmp_path / "named" / "ranking.json").read_text())["source"] == url
    done: list[int] = []  # what the progress bar hears: 8 photos and 8 metadata files, no masks
    copy = copy_inbox(url, tmp_path / "copy", progress=done.append, expect=done.append)
    assert done[0] == 16 and sum(done[1:]) == 16 and not (copy / "masks").exists()

    monkeypatch.setenv("WMS_SERVE__CAPTURE_DIR", f"s3://{s3_bucket}-missing/wms/inbox")
    missing = cli("data", "suggest", "-n", 3, "--out", tmp_path / "no", "--model", exported_model)
    assert missing.exit_code == 2 and "cannot read the capture inbox" in missing.stderr, missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and not (tmp_path / "no").exists()
