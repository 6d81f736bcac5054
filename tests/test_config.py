from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wms.cli.init import template
from wms.config import Settings, load_settings, parse_overrides
from wms.errors import ConfigError

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
