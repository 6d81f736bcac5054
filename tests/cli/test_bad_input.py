"""Bad input as a user gives it: one line saying what is wrong and what to do, no traceback."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wms.data.synth import synthesize


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WMS_GATE__METRICS", "dice"),
        ("WMS_GIT__LABELS", "data,model-promotion"),
        ("WMS_GATE__MAX_REGRESSION", "iou=0.01"),
        ("WMS_TRAIN", "epochs=3"),
    ],
)
def test_env_list_not_json_is_one_line(
    cli: Callable[..., Any], project_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("WMS_GATE__FLOOR", "0.3")  # a good variable of the same section is not blamed
    monkeypatch.setenv(name, value)
    result = cli("data", "versions")
    assert result.exit_code == 2
    assert result.output.startswith(f"error: cannot read {name}={value!r}: ")
    assert "written as JSON" in result.output
    assert "Traceback" not in result.output and "SettingsError" not in result.output


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("WMS_GATE_METRICS", "WMS_GATE__METRICS"),
        ("WMS_TRAIN_EPOCHS", "WMS_TRAIN__EPOCHS"),
        ("WMS_TRIAN__EPOCHS", "WMS_TRAIN__EPOCHS"),
    ],
)
def test_a_mistyped_env_setting_is_named_with_the_one_meant(
    cli: Callable[..., Any], project_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str, meant: str
) -> None:
    monkeypatch.setenv(name, "3")
    monkeypatch.setenv("WMS_GITHUB_TOKEN", "t")  # read by name, not a setting: nothing to say
    monkeypatch.setenv("WMS_LAYOUT", "split")  # another tool's variable, not shaped like a setting
    monkeypatch.setenv("WMS_STORE__URL", ".wms/store")
    result = cli("data", "versions")
    assert result.exit_code == 0
    assert result.output.count("warning:") == 1
    assert f"warning: {name} is not a setting and was ignored; did you mean {meant}?" in result.output


@pytest.mark.parametrize("url", ["s3:/wms-data/store", "s3:wms-data"])
def test_store_url_missing_slashes_writes_nothing(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path], url: str
) -> None:
    result = cli("--set", f"store.url={url}", "data", "ingest", make_batch(count=8))
    assert result.exit_code == 2
    assert f"bad setting store.url={url!r}: neither a folder nor a URL" in result.output
    assert "write s3://bucket/prefix" in result.output
    assert not (project_dir / "s3:").exists()  # no local 'store' named like the bucket
    assert not (project_dir / "data" / "dataset.json").exists()


@pytest.mark.parametrize(
    ("key", "uri"),
    [
        ("tracking.uri", "htp://127.0.0.1:5000"),  # a typo of the scheme
        ("tracking.uri", "sqlite:/.wms/mlflow.db"),  # a slash short
        ("tracking.uri", "sqlite://mlflow.db"),  # two slashes: mlflow.db is read as a host
        ("tracking.uri", "mlruns"),  # a folder: MLflow's file store, which it refuses
        ("compute.remote_tracking_uri", "10.0.0.5:5000"),  # no scheme
    ],
)
def test_tracking_uri_typo_is_one_line(
    cli: Callable[..., Any], project_dir: Path, key: str, uri: str
) -> None:
    result = cli("--set", f"{key}={uri}", "model", "list")
    assert result.exit_code == 2
    assert f"bad setting {key}={uri!r}: not an MLflow tracking URI" in result.output
    assert "write sqlite:///.wms/mlflow.db (a file here) or http://HOST:5000 (a server)" in result.output


def test_output_under_a_file_is_one_line(cli: Callable[..., Any], tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("kept\n")
    result = cli("data", "synth", a_file / "batch", "--count", "2", "--size", "64")
    assert result.exit_code == 1
    assert f"error: {a_file / 'batch' / 'images'}: Not a directory; " in result.output
    assert "a file is in the way where a folder is needed: name another path" in result.output
    assert a_file.read_text() == "kept\n"


def test_predict_out_is_a_file_is_one_line(
    cli: Callable[..., Any], tmp_path: Path, exported_model: Path
) -> None:
    photos = tmp_path / "photos"
    synthesize(photos, count=2, size=64, seed=3)
    a_file = tmp_path / "masks.png"
    a_file.write_bytes(b"kept")
    result = cli("predict", photos / "images", "--out", a_file, "--model", exported_model)
    assert result.exit_code == 1
    assert f"error: {a_file}: File exists; a file is in the way: name another path" in result.output
    assert a_file.read_bytes() == b"kept"


@pytest.mark.parametrize(
    ("damaged", "command"),
    [
        ("model.json", "predict"),  # edited by hand into no JSON
        ("model.onnx", "predict"),  # a download cut short
        ("model.pt", "evaluate"),  # evaluate runs the torch weights
    ],
)
def test_damaged_model_folder_is_one_line(
    cli: Callable[..., Any], tmp_path: Path, exported_model: Path, damaged: str, command: str
) -> None:
    model = tmp_path / "model"
    shutil.copytree(exported_model, model)
    (model / damaged).write_bytes((model / damaged).read_bytes()[:40])
    data = tmp_path / "data"
    synthesize(data, count=2, size=64, seed=4)
    if command == "predict":
        result = cli("predict", data / "images", "--out", tmp_path / "masks", "--model", model)
    else:
        result = cli("evaluate", model, data)
    assert result.exit_code == 1
    assert f"error: {model / damaged} cannot be read as part of a WMS model (" in result.output
    assert "fetch the model again with `wms model download VERSION DIR`" in result.output
    assert not (tmp_path / "masks").exists()


def test_prepare_with_no_pair_it_can_read_writes_nothing(cli: Callable[..., Any], tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for folder, name in (("images", "a.jpg"), ("masks", "a.png")):
        (raw / folder).mkdir(parents=True)
        (raw / folder / name).write_text("not a picture")
    result = cli("data", "prepare", raw, tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "skipped images/a.jpg" in result.output and "wrote 0 pairs" not in result.output
    assert f"error: no pair in {raw} could be prepared, so nothing was written to {tmp_path / 'out'}" in (
        " ".join(result.output.split())
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_validate_calls_an_empty_dataset_invalid(cli: Callable[..., Any], tmp_path: Path) -> None:
    for folder in ("images", "masks"):
        (tmp_path / "empty" / folder).mkdir(parents=True)
    result = cli("data", "validate", tmp_path / "empty")
    assert result.exit_code == 1
    said = " ".join(result.output.split())  # the table and the verdict wrap at the terminal's width
    assert "no_pairs" in said and "invalid — 0 pairs, 1 error(s)" in said


def test_settings_file_saved_in_another_encoding_is_one_line(
    cli: Callable[..., Any], project_dir: Path
) -> None:
    # A comment with an umlaut, saved as Latin-1 by an editor: every command read it.
    (project_dir / "wms.toml").write_bytes("# Größe\n[train]\nepochs = 2\n".encode("latin-1"))
    result = cli("model", "list")
    assert result.exit_code == 2
    assert (
        result.output
        == f"error: {project_dir / 'wms.toml'} is not UTF-8 text (byte 4 cannot be read); save it as UTF-8\n"
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["data", "pull", "xyz", "OUT"], "error: dataset version 'xyz' is not a dataset version id"),
        (
            ["data", "pull", "feedbeef0000", "OUT"],
            "error: dataset version 'feedbeef0000' is not in the store",
        ),
        (["data", "diff", "feedbeef0000", "v2"], "error: dataset version 'v2' is not a dataset version id"),
        (["data", "ingest", "BATCH", "--base", "v1"], "error: --base 'v1' is not a dataset version id"),
        (["data", "ingest", "NOWHERE"], "error: NOWHERE does not exist: name a dataset folder"),
        (["data", "prepare", "NOWHERE", "OUT"], "error: NOWHERE does not exist: name a dataset folder"),
        (["train", "NOWHERE"], "error: NOWHERE does not exist: name a dataset folder"),
        (["evaluate", "production", "NOWHERE"], "error: NOWHERE does not exist: name a dataset folder"),
        (["pipeline", "run", "--new-data", "NOWHERE"], "error: --new-data NOWHERE does not exist"),
        (["model", "show", "7"], "error: no model '7' in 'wms-segmenter' (versions: none yet)"),
        (["model", "download", "7", "OUT"], "error: no model '7' in 'wms-segmenter'"),
        (["pipeline", "resume", "nope"], "error: no pipeline run 'nope'"),
    ],
)
def test_a_name_or_path_that_names_nothing_exits_2_like_any_usage_error(
    cli: Callable[..., Any],
    project_dir: Path,
    make_batch: Callable[..., Path],
    tmp_path: Path,
    args: list[str],
    line: str,
) -> None:
    # 1 says the command ran and failed (invalid data, a gate, a backend); 2 that what it was told
    # names nothing. These exited 1 while `wms data validate NOWHERE` and `pipeline resume` exited 2.
    paths = {"OUT": tmp_path / "out", "NOWHERE": tmp_path / "nowhere", "BATCH": make_batch(count=3)}
    result = cli(*[paths.get(a, a) for a in args])
    line = line.replace("NOWHERE", str(tmp_path / "nowhere"))
    assert result.exit_code == 2, result.output
    assert result.output.startswith(line) and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (project_dir / ".wms" / "runs").exists()


def test_predict_on_a_photo_that_is_not_there_says_so_before_fetching_a_model(
    cli: Callable[..., Any], project_dir: Path, tmp_path: Path
) -> None:
    # Before: exit 1, and only after the production model was fetched (here: none, so that error).
    result = cli("predict", tmp_path / "nope.jpg", tmp_path / "gone", "--out", tmp_path / "masks")
    assert result.exit_code == 2
    assert result.output == (
        f"error: {tmp_path / 'nope.jpg'} does not exist (and 1 more): name photos or folders of them\n"
    )
    assert not (tmp_path / "masks").exists()


@pytest.mark.parametrize("command", ["predict", "evaluate", "data validate"])
@pytest.mark.parametrize("where", ["a folder", "under a file"])
def test_a_report_that_cannot_be_written_stops_the_command_before_its_work(
    cli: Callable[..., Any],
    project_dir: Path,
    make_batch: Callable[..., Path],
    tmp_path: Path,
    command: str,
    where: str,
) -> None:
    # Before: predict wrote every mask, evaluate scored every pair, then the report failed (exit 1).
    batch = make_batch(count=3)
    (blocker := tmp_path / "notes.txt").write_text("a file where a folder would go")
    report = tmp_path if where == "a folder" else blocker / "report.json"
    args = {
        "predict": ["predict", batch / "images", "--out", tmp_path / "masks"],
        "evaluate": ["evaluate", "production", batch],
        "data validate": ["data", "validate", batch],
    }[command]
    result = cli(*args, "--json", report)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: --json {report} ") and len(result.output.splitlines()) == 1
    assert ("is a folder; name a file" if where == "a folder" else "cannot be written") in result.output
    assert not (tmp_path / "masks").exists()


def test_config_naming_a_folder_says_to_name_the_file_in_it(cli: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    result = cli("--config", tmp_path / "project", "model", "list")
    assert result.exit_code == 2
    # It said "config file … not found; run `wms init` to write one", of a folder that is there.
    assert result.output == (
        f"error: config file {tmp_path / 'project'} is a folder; "
        f"name the file, e.g. {tmp_path / 'project' / 'wms.toml'}\n"
    )
