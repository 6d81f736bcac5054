"""The command line as a user meets it: help, init, synth, validate, train, model list, predict."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

GROUPS = ["data", "model", "pipeline", "compute"]
COMMANDS = [
    "init",
    "train",
    "predict",
    "demo",
    "data synth",
    "data validate",
    "model list",
    "model show",
    "model promote",
    "model rollback",
    "model download",
    "model migrate",
    "model history",
    "pipeline run",
]
COMMANDS += ["pipeline resume", "compute start", "compute stop", "compute status", "compute reap"]


def test_root_help_lists_every_group(cli: Callable[..., Any]) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for name in [*GROUPS, "train", "predict", "demo", "init"]:
        assert name in result.output


@pytest.mark.parametrize("command", GROUPS + COMMANDS)
def test_every_command_explains_itself(cli: Callable[..., Any], command: str) -> None:
    result = cli(*command.split(), "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output
    assert len(result.output.splitlines()) > 5


def test_init_writes_settings_and_gitignore(cli: Callable[..., Any], tmp_path: Path) -> None:
    assert cli("init", tmp_path / "p").exit_code == 0
    assert "[train]" in (tmp_path / "p" / "wms.toml").read_text()
    assert ".wms/" in (tmp_path / "p" / ".gitignore").read_text().splitlines()
    again = cli("init", tmp_path / "p")
    assert again.exit_code == 2
    assert "already exists" in again.output


def test_synth_then_validate(cli: Callable[..., Any], tmp_path: Path) -> None:
    assert cli("data", "synth", tmp_path / "d", "--count", "5", "--size", "64", "--seed", "3").exit_code == 0
    assert len(list((tmp_path / "d" / "images").glob("*.png"))) == 5
    ok = cli("data", "validate", tmp_path / "d", "--size", "64", "--json", tmp_path / "r.json")
    assert ok.exit_code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is True and report["pairs"] == 5
    wrong = cli("data", "validate", tmp_path / "d", "--size", "128")
    assert wrong.exit_code == 1
    assert "wrong_size" in wrong.output


def test_validate_sums_up_many_issues_by_kind(cli: Callable[..., Any], tmp_path: Path) -> None:
    # A raw dataset has an issue or more per file: one row per kind, with a count and an example.
    assert cli("data", "synth", tmp_path / "d", "--count", "20", "--size", "64").exit_code == 0
    result = cli("data", "validate", tmp_path / "d", "--size", "128", "--json", tmp_path / "r.json")
    assert result.exit_code == 1
    assert "40 issue(s) of 1 kind" in result.output and "--json FILE" in result.output
    row = next(line for line in result.output.splitlines() if "wrong_size" in line)
    assert " 40 " in row and "images/" in row
    assert len(json.loads((tmp_path / "r.json").read_text())["issues"]) == 40  # each still in the report


def test_validate_names_a_missing_folder(cli: Callable[..., Any], tmp_path: Path) -> None:
    # Exit 2, a usage error as the contract has it: 1 would say the data is invalid.
    result = cli("data", "validate", tmp_path / "nowhere", "--json", tmp_path / "r.json")
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {tmp_path / 'nowhere'} does not exist: name a dataset folder")
    assert not (tmp_path / "r.json").exists()
    (tmp_path / "photo.jpg").write_bytes(b"")
    result = cli("data", "validate", tmp_path / "photo.jpg")
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {tmp_path / 'photo.jpg'} is a file: name a dataset folder")


@pytest.mark.parametrize("size", ["0", "-3"])
def test_validate_calls_a_size_below_one_pixel_a_usage_error(
    cli: Callable[..., Any], tmp_path: Path, size: str
) -> None:
    # --size 0 once checked at data.size instead (exit 1: "expected 512x512" for valid 64 px pairs).
    assert cli("data", "synth", tmp_path / "d", "--count", "2", "--size", "64").exit_code == 0
    result = cli("data", "validate", tmp_path / "d", "--size", size, "--json", tmp_path / "r.json")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--size" in result.output and "512" not in result.output
    assert not (tmp_path / "r.json").exists()


def test_validate_calls_a_report_path_it_cannot_write_a_usage_error(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    # Exit 1 would tell CI that valid data is invalid.
    assert cli("data", "synth", tmp_path / "d", "--count", "2", "--size", "64").exit_code == 0
    (tmp_path / "taken").write_text("a file where a folder is needed")
    for option in ("--json", "--markdown"):
        result = cli("data", "validate", tmp_path / "d", "--size", "64", option, tmp_path / "taken" / "r")
        assert result.exit_code == 2 and "Traceback" not in result.output
        target = tmp_path / "taken" / "r"
        assert result.output.startswith(f"error: {option} {target} cannot be written: {tmp_path / 'taken'}")
        assert "a file is in the way" in result.output


@pytest.mark.slow
def test_train_prints_run_id_and_scores(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    result = cli("--set", "train.export_onnx=true", "train", make_batch(), "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "run id: " in result.output
    assert "test Dice" in result.output and "IoU" in result.output
    from mlflow import MlflowClient

    run_id = result.output.split("run id: ")[1].split()[0]
    default_store = f"sqlite:///{project_dir / '.wms' / 'mlflow.db'}"
    assert MlflowClient(default_store).get_run(run_id).info.status == "FINISHED"
    artifacts = {p.name for p in (project_dir / ".wms" / "mlartifacts").rglob("*") if p.is_file()}
    assert {
        "model.pt",
        "model.json",
        "model.onnx",
        "MLmodel",  # beside them: the run's model is an MLflow model
        "test_scores.csv",
        "training_curves.png",
        "val_predictions.jpg",
    } <= artifacts


def test_train_reads_the_test_split_before_it_trains(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    """The test split is scored after the last epoch; an unreadable photo there stops the run first."""
    from mlflow import MlflowClient

    from wms.config import load_settings
    from wms.data.splits import split_pairs

    batch = make_batch()
    photo = split_pairs(load_settings(start=project_dir), batch)["test"][0].image
    photo.write_bytes(photo.read_bytes()[:200])  # cut off, as a copy that stopped midway
    result = cli("train", batch, "--epochs", "1")
    assert result.exit_code == 1
    assert f"cannot read {photo} as an image" in result.output
    client = MlflowClient(f"sqlite:///{project_dir / '.wms' / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []  # no run was started, nothing trained


@pytest.mark.slow
def test_train_recipe_is_a_flag_that_the_other_flags_override(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path]
) -> None:
    from wms.config import load_settings
    from wms.registry import MlflowRegistry
    from wms.train.recipes import RECIPES

    batch = make_batch(count=24)
    flags = ["--recipe", "cpu", "--epochs", "1", "--image-size", "32"]
    result = cli("--set", "train.export_onnx=false", "--set", "train.refine_epochs=2", "train", batch, *flags)
    assert result.exit_code == 0, result.output
    run_id = result.output.split("run id: ")[1].split()[0]
    run = MlflowRegistry(load_settings(start=project_dir))._client.get_run(run_id)
    params = run.data.params
    assert len(run.data.tags["wms.refine_sha256"]) == 64  # the second stage's weights, checked at download
    # wms.toml's tiny width and depth give way to the recipe's; --epochs and --image-size win over it.
    assert params["train.recipe"] == "cpu"
    assert (params["train.epochs"], params["train.image_size"]) == ("1", "32")
    cpu = RECIPES["cpu"]
    assert (params["train.depth"], params["train.learning_rate"]) == (
        str(cpu["depth"]),
        str(cpu["learning_rate"]),
    )


def test_an_unknown_train_recipe_is_one_line(cli: Callable[..., Any], project_dir: Path) -> None:
    result = cli("train", project_dir, "--recipe", "tpu")
    assert result.exit_code == 2
    assert "unknown recipe 'tpu'; use one of: cpu, gpu" in result.output


@pytest.mark.slow
def test_pipeline_model_list_and_predict(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    result = cli("pipeline", "run", "--new-data", make_batch())
    assert result.exit_code == 0, result.output
    assert "promoted version 1" in result.output

    listed = json.loads(cli("model", "list", "--json").output)
    assert listed[0]["version"] == "1"
    assert listed[0]["aliases"] == ["production"]
    assert {"test_dice", "test_iou"} <= set(listed[0]["metrics"])
    assert len(listed[0]["run_id"]) == 32

    # A photo stored rotated by EXIF: the mask must match the upright size.
    photo = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    Image.new("RGB", (120, 80), (200, 200, 200)).save(photo, exif=exif)
    plain = tmp_path / "plain.png"
    Image.new("RGB", (70, 50), (20, 20, 20)).save(plain)
    result = cli("predict", photo, plain, "--out", tmp_path / "masks")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "masks" / "rotated.png") as m:
        assert m.size == (80, 120) and m.mode == "L"
        assert set(np.unique(np.asarray(m))) <= {0, 255}
    with Image.open(tmp_path / "masks" / "plain.png") as m:
        assert m.size == (70, 50)


def test_predict_reports_how_sure_it_is_of_each_photo(
    cli: Callable[..., Any], served_project: Path, exported_model: Path, tmp_path: Path
) -> None:
    from wms.data.synth import synth_pair
    from wms.train.export import OnnxSegmenter
    from wms.uncertainty import VERDICTS, assess

    photos = []
    for index, size in enumerate((64, 96)):
        photos.append(tmp_path / f"meter{index}.png")
        synth_pair(seed=7, index=index, size=size)[0].save(photos[-1])
    Image.new("RGB", (80, 60), (30, 30, 30)).save(tmp_path / "dark.png")  # nothing to find
    photos.append(tmp_path / "dark.png")
    result = cli("predict", *photos, "--out", tmp_path / "masks", "--json", tmp_path / "report.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    segmenter = OnnxSegmenter.load(exported_model)  # what `wms serve` runs, and so `wms predict`
    images = [Image.open(p).convert("RGB") for p in photos]
    for entry, image, prob, mask in zip(
        report["predictions"],
        images,
        segmenter.probability_maps(images),
        segmenter.predict_masks(images),
        strict=True,
    ):
        assert entry["uncertainty"] == assess(prob, segmenter.spec.threshold).to_dict()
        assert entry["uncertainty"]["verdict"] in VERDICTS
        with Image.open(entry["mask"]) as written:
            assert np.array_equal(np.asarray(written) > 127, mask)  # the masks predict_masks gives
        assert (entry["width"], entry["height"]) == image.size
    # The test model trained for seconds: its probabilities hover near its threshold, so it
    # is unsure of every photo, and the summary names each one.
    assert "3 of 3 to check" in result.output
    assert all(name in result.output for name in ("meter0.png", "meter1.png", "dark.png"))


def test_predict_takes_a_dataset_folder_and_a_model_folder(
    cli: Callable[..., Any], project_dir: Path, exported_model: Path, tmp_path: Path
) -> None:
    from wms.data.synth import synthesize

    synthesize(tmp_path / "dataset", count=3, size=48, seed=4)
    (tmp_path / "dataset" / "README.md").write_text("# three meters\n")
    result = cli("predict", tmp_path / "dataset", "--out", tmp_path / "masks", "--model", exported_model)
    assert result.exit_code == 0, result.output
    photos = sorted(p.stem for p in (tmp_path / "dataset" / "images").iterdir())
    assert sorted(p.stem for p in (tmp_path / "masks").iterdir()) == photos
    assert "wrote 3 mask(s)" in result.output

    (tmp_path / "empty").mkdir()
    empty = cli("predict", tmp_path / "empty", "--out", tmp_path / "none", "--model", exported_model)
    assert empty.exit_code == 2 and "no photos to segment" in empty.output
    assert not (tmp_path / "none").exists()

    twin = tmp_path / "twin"
    shutil.copytree(tmp_path / "dataset" / "images", twin)
    both = cli("predict", tmp_path / "dataset", twin, "--out", tmp_path / "two", "--model", exported_model)
    assert both.exit_code == 1 and "would both write" in both.output
    assert not (tmp_path / "two").exists()


def test_predict_without_production_says_what_to_do(
    cli: Callable[..., Any], project_dir: Path, tmp_path: Path
) -> None:
    photo = tmp_path / "p.png"
    Image.new("RGB", (10, 10)).save(photo)
    result = cli("predict", photo, "--out", tmp_path / "m")
    assert result.exit_code == 2  # the model it uses (production) names none yet
    assert "wms model list" in result.output


def test_predict_refuses_a_non_image_before_writing(
    cli: Callable[..., Any], project_dir: Path, tmp_path: Path, make_batch: Callable[..., Path]
) -> None:
    assert cli("--set", "train.epochs=0", "pipeline", "run", "--new-data", make_batch()).exit_code == 0
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    result = cli("predict", text, "--out", tmp_path / "m")
    assert result.exit_code == 1
    assert "cannot read" in result.output
    assert not (tmp_path / "m").exists()


def test_model_list_when_empty(cli: Callable[..., Any], project_dir: Path) -> None:
    assert json.loads(cli("model", "list", "--json").output) == []
    assert "no model versions yet" in cli("model", "list").output


def test_the_first_command_to_create_the_registry_prints_no_mlflow_logs(tmp_path: Path) -> None:
    # A fresh process, as a user runs it: MLflow creates its tables and would log each step.
    (tmp_path / "wms.toml").write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "wms", "model", "list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / ".wms" / "mlflow.db").is_file()  # the registry was created by this command
    assert done.stdout.strip().splitlines() == [
        "no model versions yet; run `wms pipeline run --new-data DIR` or `wms demo`"
    ]
    assert done.stderr == ""


def test_the_demo_says_what_serves_when_it_deployed_nothing(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wms.cli.demo import _serving
    from wms.config import load_settings
    from wms.deploy.local import STATE_FILE, LocalDeployer

    project = load_settings(start=project_dir)  # the tests' settings: deploy.in_pipeline off
    assert _serving(project, "model 3 at http://127.0.0.1:8000").startswith("model 3 at")
    assert _serving(project, None) == "nothing (deploy.in_pipeline is off; `wms deploy` starts it)"
    monkeypatch.setenv("WMS_DEPLOY__IN_PIPELINE", "true")
    project = load_settings(start=project_dir)
    assert _serving(project, None) == "nothing (this run promoted no model; `wms deploy` starts production)"

    # An earlier run's server, still running (its command line names wms, as `wms serve`'s does).
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "wms"])
    try:
        state = {"url": "http://127.0.0.1:8000", "version": "2", "server": {"pid": server.pid}}
        deployer = LocalDeployer(project, print)
        deployer.dir.mkdir(parents=True, exist_ok=True)
        (deployer.dir / STATE_FILE).write_text(json.dumps(state))
        assert _serving(project, None).startswith(
            "model 2 at http://127.0.0.1:8000, deployed by an earlier run"
        )
    finally:
        server.kill()
        server.wait()
    assert _serving(project, None).startswith("nothing")  # its server gone, nothing serves


@pytest.mark.slow
def test_demo_ends_with_a_production_model_and_masks(cli: Callable[..., Any], project_dir: Path) -> None:
    result = cli("demo", "--count", "80", "--size", "64")
    assert result.exit_code == 0, result.output
    assert "production model: version" in result.output
    listed = json.loads(cli("model", "list", "--json").output)
    assert any("production" in r["aliases"] for r in listed)
    masks = sorted((project_dir / ".wms" / "demo" / "predictions").glob("*.png"))
    assert len(masks) == 4
    history = (project_dir / "models" / "production_history.jsonl").read_text().splitlines()
    assert 1 <= len(history) <= 2


def test_console_script_is_installed() -> None:
    wms = Path(sys.executable).parent / "wms"
    done = subprocess.run([str(wms), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "pipeline" in done.stdout


def test_the_command_tree_loads_without_the_heavy_libraries() -> None:
    """`wms --help`, `wms compute status` and the like need none of them: each costs every command time."""
    heavy = ("torch", "scipy", "mlflow", "onnxruntime", "boto3")
    code = f"import sys, wms.cli.main; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_error_is_printed_as_written(cli: Callable[..., Any], project_dir: Path) -> None:
    """Square brackets in a message are text, not markup: `[train]` names the settings section."""
    result = cli("--set", "train.epoch=3", "model", "list")
    assert result.exit_code == 2
    assert "unknown setting train.epoch (valid keys in [train]: recipe," in result.output


def test_square_brackets_in_names_are_printed_as_written(
    cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name is no markup: `[old]` stays, and a `[/` (closing no tag) does not crash the output."""
    monkeypatch.chdir(tmp_path)
    assert cli("data", "synth", "raw [old]", "--count", 3, "--size", 64).exit_code == 0
    (tmp_path / "raw [old]" / "images" / "notes [draft].jpg").write_text("not a photo")
    (tmp_path / "raw [old]" / "masks" / "notes [draft].png").write_text("not a mask")
    result = cli("data", "prepare", "raw [old]", "out[/new]")  # folder `new]` in folder `out[`
    assert result.exit_code == 1
    assert "skipped images/notes [draft].jpg" in result.output
    assert "to out[/new]/images (JPEG)" in result.output
