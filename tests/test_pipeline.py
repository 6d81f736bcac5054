"""End to end: `wms pipeline run` twice in a temporary project, on tiny synthetic data."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wms.config import load_settings, parse_overrides
from wms.data.store import open_store
from wms.errors import BatchError, ConflictError, DataError, WmsError
from wms.pipeline import Pipeline, StageRecord
from wms.registry import MlflowRegistry
from wms.train.run import WORST_LOGGED

pytestmark = pytest.mark.slow


class Recorder:
    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []

    def stage_started(self, stage: StageRecord) -> None:
        pass

    def stage_done(self, stage: StageRecord) -> None:
        self.done.append((stage.name, stage.status))

    def train_reporter(self) -> None:
        return None


def run(project_dir: Path, batch: Path, *sets: str) -> tuple[Any, Recorder, MlflowRegistry]:
    project = load_settings(start=project_dir, overrides=parse_overrides(list(sets)))
    registry = MlflowRegistry(project)
    recorder = Recorder()
    return Pipeline(project, registry, recorder).run(batch), recorder, registry


def history(project_dir: Path) -> list[dict[str, Any]]:
    lines = (project_dir / "models" / "production_history.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_first_model_promoted_then_untrained_candidate_rejected(
    project_dir: Path, make_batch: Callable[..., Path], cli: Callable[..., Any]
) -> None:
    first, recorder, registry = run(project_dir, make_batch("b1", seed=1))
    assert first.promoted, first.summary
    assert [s for s, _ in recorder.done] == [
        "merge",
        "validate",
        "start_compute",
        "train",
        "gate",
        "stop_compute",
        "promote",
        "publish",
        "reconcile",
        "deploy",
    ]
    assert registry.production() is not None
    pointer = json.loads((project_dir / "data" / "dataset.json").read_text())
    assert pointer["counts"]["pairs"] == 80
    assert pointer["version"] == first.outputs["dataset_version"]
    # The candidate's worst test photos are drawn into its run, one overlay each and an index.
    run_id = first.outputs["mlflow_run_id"]
    worst = [a.path for a in registry._client.list_artifacts(run_id, "worst")]
    tested = int(registry._client.get_run(run_id).data.params["split.test"])
    assert "worst/index.html" in worst
    assert len([p for p in worst if p.endswith(".jpg")]) == min(WORST_LOGGED, tested)

    second, recorder, registry = run(project_dir, make_batch("b2", count=20, seed=2), "train.epochs=0")
    assert not second.promoted
    assert second.summary.startswith("not promoted: ")
    assert "production stays version 1" in second.summary
    assert ("promote", "skipped") in recorder.done
    assert registry.production().version == "1"
    # The data pointer and the ledger did not move.
    assert json.loads((project_dir / "data" / "dataset.json").read_text()) == pointer
    assert len(history(project_dir)) == 1
    # Both runs are recorded; the second gate compared on the merged test split.
    record = json.loads((second.run_dir / "run.json").read_text())
    assert record["outputs"]["gate"]["baseline_version"] == "1"
    assert {s["status"] for s in record["stages"]} == {"ok", "skipped"}
    # The summary says the batch's pairs stay out of main's dataset, and how to take them in.
    version = second.outputs["dataset_version"]
    assert (
        "its 20 new pair(s) stay out of main's dataset, so later batches train without them" in second.summary
    )
    assert f"`wms data pull {version} DIR && wms data ingest DIR`, then commit" in second.summary
    pulled = cli("data", "pull", version, str(project_dir / "taken"))
    assert pulled.exit_code == 0, pulled.output
    taken = cli("data", "ingest", str(project_dir / "taken"))
    assert taken.exit_code == 0, taken.output
    assert json.loads((project_dir / "data" / "dataset.json").read_text())["counts"]["pairs"] == 100


def test_better_candidate_is_promoted_and_previous_kept(
    project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    first, _, _ = run(project_dir, make_batch("b1", seed=1), "train.epochs=0")
    assert first.promoted  # floor is 0 in the tiny settings
    second, _, registry = run(project_dir, make_batch("b2", count=20, seed=2))
    assert second.promoted, second.summary
    versions = {r.version: r.aliases for r in registry.list()}
    assert versions == {"1": ["previous"], "2": ["production"]}
    moves = history(project_dir)
    assert [(m["from_version"], m["to_version"]) for m in moves] == [(None, "1"), ("1", "2")]
    assert moves[1]["dataset_version"] == second.outputs["dataset_version"]


def test_invalid_data_stops_before_training_and_keeps_nothing(
    project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    batch = make_batch("bad", count=6)
    next((batch / "masks").iterdir()).unlink()
    notes = sorted((batch / "images").iterdir())[-1]
    notes.write_text("not a photo")  # the merge takes it on, and validation names it
    with pytest.raises(DataError, match="missing_mask"):
        run(project_dir, batch)
    assert open_store(load_settings(start=project_dir)).versions() == []
    assert not (project_dir / "models").exists()
    run_dir = next((project_dir / ".wms" / "runs").iterdir())
    stages = {s["name"]: s["status"] for s in json.loads((run_dir / "run.json").read_text())["stages"]}
    assert stages["validate"] == "failed" and stages["train"] == "skipped"
    report = (run_dir / "validation.md").read_text()
    assert "missing_mask" in report and notes.name in report


def test_conflicting_ids_stop_the_merge(project_dir: Path, make_batch: Callable[..., Path]) -> None:
    run(project_dir, make_batch("b1", count=30, seed=1), "train.epochs=0")
    clash = make_batch("clash", count=2, seed=5)
    for kind in ("images", "masks"):
        for p in (clash / kind).iterdir():
            p.rename(p.with_name(p.name.replace("s5", "s1")))
    with pytest.raises(ConflictError):
        run(project_dir, clash)


def test_the_same_batch_again_stops_after_merge(project_dir: Path, make_batch: Callable[..., Path]) -> None:
    batch = make_batch("b1", seed=1)
    run(project_dir, batch, "train.epochs=0")
    again, recorder, _ = run(project_dir, batch)
    assert not again.promoted
    assert "no new pairs" in again.summary
    assert recorder.done == [("merge", "ok")]
    assert {s.status for name, s in again.stages.items() if name != "merge"} == {"skipped"}


def test_merged_version_is_stored_and_pointed_at_after_promotion(
    project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    first, _, _ = run(project_dir, make_batch("b1", seed=1), "train.epochs=0")
    second, _, _ = run(project_dir, make_batch("b2", count=20, seed=2))
    store = open_store(load_settings(start=project_dir))
    versions = store.versions()
    assert [(v.pairs, v.parent) for v in versions] == [(80, None), (100, first.outputs["dataset_version"])]
    pointer = json.loads((project_dir / "data" / "dataset.json").read_text())
    expected = second.outputs["dataset_version"] if second.promoted else first.outputs["dataset_version"]
    assert pointer["version"] == expected
    assert pointer["manifest_sha256"] == store.manifest_sha256(expected)


def raw_photos(batch: Path) -> Path:
    """Turn a synthetic batch into raw-looking data: 4:3 JPEG photos with JPEG (non-binary) masks."""
    from PIL import Image

    for kind in ("images", "masks"):
        for p in list((batch / kind).iterdir()):
            with Image.open(p) as img:
                img.resize((96, 72)).save(p.with_suffix(".jpg"), quality=90)
            p.unlink()
    return batch


def test_auto_prepare_turns_raw_photos_into_training_data(
    project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    raw = raw_photos(make_batch("raw", seed=3))
    with pytest.raises(DataError, match="validation failed"):
        run(project_dir, raw, "train.epochs=0")
    done, _, _ = run(project_dir, raw, "train.epochs=0", "data.auto_prepare=true")
    assert done.promoted
    validation = json.loads((done.run_dir / "validation.json").read_text())
    assert validation["ok"] and validation["stats"]["image_sizes"] == {"64x64": 80}


def test_a_run_that_failed_validation_resumes_past_auto_prepare(
    project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    raw = raw_photos(make_batch("raw", count=20, seed=3))
    copies = []
    for kind in ("images", "masks"):  # the same photo under a second name: validation refuses it
        first = sorted((raw / kind).iterdir())[0]
        copies.append(raw / kind / f"copy{first.suffix}")
        copies[-1].write_bytes(first.read_bytes())
    sets = ("train.epochs=0", "data.auto_prepare=true")
    with pytest.raises(DataError, match="validation failed"):
        run(project_dir, raw, *sets)
    for copy in copies:  # the person fixes the batch and resumes the run
        copy.unlink()
    project = load_settings(start=project_dir, overrides=parse_overrides(list(sets)))
    [run_dir] = [d for d in project.runs_dir.iterdir() if (d / "run.json").is_file()]
    recorder = Recorder()
    resumed = Pipeline(project, MlflowRegistry(project), recorder).resume(run_dir.name)
    assert resumed.promoted, resumed.summary
    assert ("merge", "ok") in recorder.done and ("validate", "ok") in recorder.done


@pytest.mark.parametrize("corruption", ["perturbed", "garbage"])
def test_a_candidate_whose_onnx_disagrees_is_not_registered(
    corruption: str,
    cli: Callable[..., Any],
    project_dir: Path,
    make_batch: Callable[..., Path],
    perturbed_export: Callable[[Any, Path], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = cli("--set", "train.epochs=2", "pipeline", "run", "--new-data", make_batch("b1", seed=1))
    assert first.exit_code == 0, first.output

    def corrupt(segmenter: Any, path: Path) -> None:
        if corruption == "perturbed":
            perturbed_export(segmenter, path)
        else:
            path.write_bytes(b"\x00garbage, not an ONNX model")

    monkeypatch.setattr("wms.train.run.export_onnx", corrupt)
    second = cli(
        "--set", "train.epochs=2", "pipeline", "run", "--new-data", make_batch("b2", count=20, seed=2)
    )
    assert second.exit_code != 0
    reason = "below the 99.9% required" if corruption == "perturbed" else "cannot be loaded or run"
    assert reason in second.output and "not registered" in second.output
    listed = json.loads(cli("model", "list", "--json").output)
    assert [(r["version"], r["aliases"]) for r in listed] == [("1", ["production"])]
    assert len(history(project_dir)) == 1


@pytest.mark.parametrize(
    ("main_pointer", "error"),
    [
        ('{"version": "0123456789ab"}\n', "dataset version '0123456789ab' is not in the store"),
        ('{"version": \n', "is not valid JSON; fix it on main"),
        ("null\n", "holds null, not a JSON object naming a version; fix it on main"),
    ],
)
def test_a_main_or_store_the_batch_cannot_help_leaves_it_failed_for_the_sweeper(
    project_dir: Path, make_batch: Callable[..., Path], main_pointer: str, error: str
) -> None:
    """The batch is fine; main names a version the store lacks, or main's pointer is broken."""
    sha = "ef" * 20
    (project_dir / "data").mkdir()
    (project_dir / "data" / "dataset.json").write_text(main_pointer)
    project = load_settings(start=project_dir)
    pipeline = Pipeline(project, MlflowRegistry(project), Recorder())
    with pytest.raises(DataError, match=error):
        pipeline.run(make_batch("b", count=6), branch="data/20260102-030405", sha=sha)
    record = json.loads((project_dir / ".wms" / "store" / "batches" / f"{sha}.json").read_text())
    assert record["status"] == "failed", record  # run again once main or the store is fixed


def test_an_invalid_batch_is_recorded_rejected(project_dir: Path, make_batch: Callable[..., Path]) -> None:
    sha = "fe" * 20
    batch = make_batch("bad", count=6)
    next((batch / "masks").iterdir()).unlink()
    project = load_settings(start=project_dir)
    with pytest.raises(DataError, match="missing_mask"):
        Pipeline(project, MlflowRegistry(project), Recorder()).run(batch, branch="data/x", sha=sha)
    record = json.loads((project_dir / ".wms" / "store" / "batches" / f"{sha}.json").read_text())
    assert record["status"] == "rejected" and "validation failed" in record["summary"]
    # A rejected batch is finished (`wms pipeline resume` refuses it): the way on is a fixed push.
    assert "wms pipeline resume" not in record["summary"]
    assert record["summary"].endswith("fix the pairs and push them again (a new data branch)")


def test_a_changed_data_size_is_not_blamed_on_a_batch_prepared_to_it(
    project_dir: Path, make_batch: Callable[..., Path], cli: Callable[..., Any]
) -> None:
    """The stored pairs are 64 px; data.size is then changed to 128 and a batch prepared to 128 pushed."""
    assert cli("data", "ingest", make_batch("b1", count=12, seed=1)).exit_code == 0
    sha = "ab" * 20
    project = load_settings(start=project_dir, overrides=parse_overrides(["data.size=128"]))
    with pytest.raises(DataError) as failed:
        Pipeline(project, MlflowRegistry(project), Recorder()).run(
            make_batch("b2", count=6, seed=2, size=128), branch="data/x", sha=sha
        )
    message = str(failed.value)
    assert "already in dataset version" in message and "none from this batch" in message
    assert "64x64 px and data.size is 128" in message and "fix the new data" not in message
    record = json.loads((project_dir / ".wms" / "store" / "batches" / f"{sha}.json").read_text())
    assert record["status"] == "failed", record  # run again once data.size is set back; not rejected


def test_a_store_url_changed_since_main_pointed_names_the_store_main_names(
    project_dir: Path, make_batch: Callable[..., Path], cli: Callable[..., Any]
) -> None:
    assert cli("data", "ingest", make_batch("b1", count=12, seed=1)).exit_code == 0
    with pytest.raises(DataError, match=r"written for the store \.wms/store and store\.url is \.wms/moved"):
        run(project_dir, make_batch("b2", count=6, seed=2), "store.url=.wms/moved")


def test_a_run_stopped_at_publish_resumes_in_the_project_moved_since(
    project_dir: Path, make_batch: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The project folder is renamed between a publish that failed and `wms pipeline resume`."""
    project = load_settings(start=project_dir)
    with pytest.raises(WmsError, match="fault injected at stage publish"):
        pipeline = Pipeline(project, MlflowRegistry(project), Recorder(), fault="publish")
        pipeline.run(make_batch("b1", count=30))
    moved = project_dir.rename(project_dir.with_name("renamed"))
    monkeypatch.chdir(moved)
    project = load_settings(start=moved)
    run_id = next((moved / ".wms" / "runs").iterdir()).name
    resumed = Pipeline(project, MlflowRegistry(project), Recorder()).resume(run_id)
    assert resumed.status == "ok" and resumed.promoted, resumed.summary
    assert json.loads((moved / "models" / "production_current.json").read_text())["to_version"] == "1"


def test_a_first_batch_with_no_test_pair_is_rejected_before_compute_starts(
    project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    # A first small batch whose ids all hash into train or val: no model could be judged on it.
    from wms.data.splits import split_of

    batch = make_batch("small", count=6, seed=4)
    for image in sorted((batch / "images").iterdir()):
        if split_of(image.stem, 0.15, 0.15) == "test":
            image.unlink()
            (batch / "masks" / image.name).unlink()
    assert len(list((batch / "images").iterdir())) >= 3
    with pytest.raises(BatchError, match="test split") as raised:
        run(project_dir, batch)
    assert "push these pairs again with more" in str(raised.value)
    assert open_store(load_settings(start=project_dir)).versions() == []  # nothing stored
    run_dir = next((project_dir / ".wms" / "runs").iterdir())
    stages = {s["name"]: s["status"] for s in json.loads((run_dir / "run.json").read_text())["stages"]}
    assert stages["validate"] == "failed" and stages["start_compute"] == "skipped"


def test_a_first_batch_with_too_few_test_pairs_for_the_gate_is_rejected_before_compute_starts(
    project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    # 20 pairs, of which 3 hash into the test split: the gate promotes nothing judged on fewer than 5.
    with pytest.raises(BatchError) as raised:
        run(project_dir, make_batch("small", count=20, seed=2), "gate.min_images=5")
    assert str(raised.value) == (
        "only 3 of the 20 pairs of the merged dataset fall in the test split (data.test_fraction = 0.15, "
        "by a hash of each id), fewer than gate.min_images = 5, so the gate could promote no model trained "
        "on it; push these pairs again with more — nothing was stored, no compute started"
    )
    assert open_store(load_settings(start=project_dir)).versions() == []
    run_dir = next((project_dir / ".wms" / "runs").iterdir())
    stages = {s["name"]: s["status"] for s in json.loads((run_dir / "run.json").read_text())["stages"]}
    assert stages["validate"] == "failed" and stages["start_compute"] == "skipped"


def _corrected_batch(first_batch: Path, folder: Path) -> Path:
    """A labeller's fix of one stored pair's mask (synth_s1_00003), sent with the photo as stored."""
    for kind in ("images", "masks"):
        (folder / kind).mkdir(parents=True)
    (folder / "images" / "synth_s1_00003.png").write_bytes(
        (first_batch / "images" / "synth_s1_00003.png").read_bytes()
    )
    (folder / "masks" / "synth_s1_00003.png").write_bytes(
        (first_batch / "masks" / "synth_s1_00004.png").read_bytes()
    )
    return folder


def test_a_corrected_mask_of_a_stored_photo_goes_in_and_the_summary_names_it(
    project_dir: Path, make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    first_batch = make_batch("b1", count=30, seed=1)
    first, _, _ = run(project_dir, first_batch, "train.epochs=0")
    assert first.promoted, first.summary
    fixed = _corrected_batch(first_batch, tmp_path / "fixed")

    second, recorder, _ = run(project_dir, fixed, "train.epochs=0")
    assert ("train", "ok") in recorder.done  # trained on the corrected data
    assert "the batch corrects the masks of stored pairs: synth_s1_00003" in second.summary
    record = json.loads((second.run_dir / "run.json").read_text())
    merge = next(s for s in record["stages"] if s["name"] == "merge")
    assert merge["outcome"].startswith("0 new, 1 mask(s) corrected, 0 already present")
    store = open_store(load_settings(start=project_dir))
    old = store.manifest(first.outputs["dataset_version"])["pairs"]["synth_s1_00003"]
    new = store.manifest(second.outputs["dataset_version"])["pairs"]["synth_s1_00003"]
    assert new["split"] == old["split"] and new["image"] == old["image"] and new["mask"] != old["mask"]


def test_a_registry_without_mains_production_stops_the_run_before_compute_starts(
    project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    """MLflow restored from a backup older than main's promotion lacks the version main serves:
    the gate refuses every candidate, so the run stops before the GPU starts and trains for it
    (and before each of the sweeper's retries does so again), saying which move serves again."""
    first, _, registry = run(project_dir, make_batch("b1", seed=1), "train.epochs=0")
    assert first.promoted
    registry._client.delete_model_version(registry.model_name, "1")  # as after the restore
    with pytest.raises(WmsError, match=r"names version 1, but the registry holds no model"):
        run(project_dir, make_batch("b2", count=20, seed=2), "train.epochs=0")
    run_dir = max((project_dir / ".wms" / "runs").iterdir(), key=lambda d: d.stat().st_mtime)
    stages = {s["name"]: s["status"] for s in json.loads((run_dir / "run.json").read_text())["stages"]}
    assert stages["start_compute"] == "failed" and stages["train"] == "skipped", stages


def test_the_way_to_take_in_a_batch_not_promoted_takes_in_its_corrected_masks_too(
    project_dir: Path, make_batch: Callable[..., Path], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """The summary of a batch the gate kept out gives the commands that take it in on main; for a
    batch that corrects stored masks they must correct them, not stop at the ingest's refusal."""
    first_batch = make_batch("b1", count=30, seed=1)
    assert run(project_dir, first_batch, "train.epochs=0")[0].promoted
    fixed = _corrected_batch(first_batch, tmp_path / "fixed")
    kept_out, _, _ = run(project_dir, fixed, "train.epochs=0", "gate.min_delta=1")
    assert not kept_out.promoted and "1 corrected mask(s) stay out of main's dataset" in kept_out.summary
    version = kept_out.outputs["dataset_version"]
    commands = f"wms data pull {version} DIR && wms data ingest DIR --correct-masks"
    assert f"`{commands}`" in kept_out.summary
    for command in commands.replace("DIR", str(tmp_path / "taken")).split(" && "):
        done = cli(*command.split()[1:])
        assert done.exit_code == 0, done.output
    assert json.loads((project_dir / "data" / "dataset.json").read_text())["version"] == version
