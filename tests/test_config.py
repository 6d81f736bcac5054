from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wms.cli.init import template
from wms.config import Settings, load_settings, parse_overrides
from wms.errors import ConfigError
from wms.train.recipes import RECIPES

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_defaults_without_a_file(tmp_path: Path) -> None:
    project = load_settings(start=tmp_path)
    assert project.root == tmp_path.resolve()
    assert project.settings.train.epochs == Settings().train.epochs
    assert project.tracking_uri == f"sqlite:///{tmp_path.resolve()}/.wms/mlflow.db"


def test_file_is_found_in_a_parent_folder(tmp_path: Path) -> None:
    (tmp_path / "wms.toml").write_text("[train]\nepochs = 3\n")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    project = load_settings(start=nested)
    assert project.root == tmp_path.resolve()
    assert project.settings.train.epochs == 3


def test_precedence_flags_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wms.toml").write_text("[train]\nepochs = 3\nseed = 1\n")
    monkeypatch.setenv("WMS_TRAIN__EPOCHS", "5")
    project = load_settings(start=tmp_path)
    assert (project.settings.train.epochs, project.settings.train.seed) == (5, 1)
    project = load_settings(start=tmp_path, overrides=parse_overrides(["train.epochs=7"]))
    assert project.settings.train.epochs == 7


def test_epochs_zero_is_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WMS_TRAIN__EPOCHS", "0")
    assert load_settings(start=tmp_path).settings.train.epochs == 0


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        ("WMS_TRAIN__EPOCHS", "many", "bad setting train.epochs='many'"),
        ("WMS_TRAIN__EPOCHS", "-1", "train.epochs='-1': Input should be greater than or equal to 0"),
        ("WMS_TRAIN__EPOCH", "3", "unknown setting train.epoch (valid keys in [train]:"),
        ("WMS_COMPUTE__BACKEND", "gpu-cloud", "bad setting compute.backend='gpu-cloud'"),
        ("WMS_TRAIN__LOSS", "iou", "bad setting train.loss='iou'"),
    ],
)
def test_bad_values_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings(start=tmp_path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_broken_toml_is_reported(tmp_path: Path) -> None:
    (tmp_path / "wms.toml").write_text("[train\nepochs = 3\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(start=tmp_path)


def test_set_flag_needs_section_and_key() -> None:
    with pytest.raises(ConfigError, match=r"SECTION\.KEY=VALUE"):
        parse_overrides(["epochs=3"])


def test_shipped_template_is_the_projects_file_and_the_defaults(tmp_path: Path) -> None:
    assert (REPO_ROOT / "wms.toml").read_text() == template()
    (tmp_path / "wms.toml").write_text(template())
    assert load_settings(start=tmp_path).settings.model_dump() == Settings().model_dump()


def test_bad_value_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "WMS_TRAIN__EPOCHS": "lots"}
    done = subprocess.run(
        [sys.executable, "-m", "wms", "model", "list"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "train.epochs='lots'" in lines[0]
    assert "Traceback" not in done.stderr


# -- train.recipe: a named set of [train] values at the level of the source that names it -------


def _train(tmp_path: Path, toml: str, *sets: str) -> Any:
    (tmp_path / "wms.toml").write_text(toml)
    return load_settings(start=tmp_path, overrides=parse_overrides(list(sets))).settings.train


FILE_KEYS = "[train]\nepochs = 12\nimage_size = 128\n"


def test_a_recipe_from_the_environment_replaces_the_files_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WMS_TRAIN__RECIPE", "gpu")
    train = _train(tmp_path, FILE_KEYS)
    gpu = RECIPES["gpu"]
    assert train.recipe == "gpu"
    assert (train.epochs, train.image_size, train.base_channels) == (
        gpu["epochs"],
        gpu["image_size"],
        gpu["base_channels"],
    )
    assert train.seed == Settings().train.seed  # a key the recipe does not set is left alone


def test_a_key_from_the_recipes_source_or_a_stronger_one_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WMS_TRAIN__RECIPE", "gpu")
    monkeypatch.setenv("wms_train__Epochs", "3")  # environment names are case-insensitive
    train = _train(tmp_path, FILE_KEYS)
    assert (train.epochs, train.image_size) == (3, RECIPES["gpu"]["image_size"])
    train = _train(tmp_path, FILE_KEYS, "train.image_size=64")
    assert (train.epochs, train.image_size) == (3, 64)


def test_a_recipe_in_the_file_yields_to_keys_beside_it(tmp_path: Path) -> None:
    train = _train(tmp_path, '[train]\nrecipe = "cpu"\nepochs = 5\n')
    cpu = RECIPES["cpu"]
    assert (train.recipe, train.epochs) == ("cpu", 5)
    assert (train.image_size, train.max_minutes) == (cpu["image_size"], cpu["max_minutes"])


def test_a_recipe_flag_replaces_environment_and_file_but_not_other_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WMS_TRAIN__EPOCHS", "3")
    train = _train(tmp_path, FILE_KEYS, "train.recipe='cpu'", "train.depth=2")
    cpu = RECIPES["cpu"]
    assert (train.epochs, train.image_size, train.depth) == (cpu["epochs"], cpu["image_size"], 2)


def test_no_recipe_leaves_the_sources_as_they_are(tmp_path: Path) -> None:
    assert _train(tmp_path, FILE_KEYS + 'recipe = ""\n').model_dump() == {
        **Settings().train.model_dump(),
        "epochs": 12,
        "image_size": 128,
    }


def test_an_unknown_recipe_is_one_line_naming_the_valid_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WMS_TRAIN__RECIPE", "h100")
    with pytest.raises(ConfigError) as info:
        load_settings(start=tmp_path)
    message = str(info.value)
    assert "bad setting train.recipe='h100': unknown recipe 'h100'; use one of: cpu, gpu" in message
    assert "WMS_TRAIN__RECIPE" in message and "\n" not in message


def test_wms_toml_names_every_setting_with_its_default() -> None:
    """wms.toml is where a user reads what can be set: a key missing there is a setting nobody finds."""
    import tomllib

    written = tomllib.loads((Path(__file__).resolve().parents[1] / "src" / "wms" / "wms.toml").read_text())
    defaults = Settings.model_construct()
    for section in Settings.model_fields:
        missing = set(type(getattr(defaults, section)).model_fields) - set(written.get(section, {}))
        assert not missing, f"[{section}] in wms.toml lacks {sorted(missing)}"
