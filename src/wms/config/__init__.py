"""Typed settings, one section per concern, built once at the CLI entry point.

Sources, strongest first: CLI flags (`--set train.epochs=3`, command options) > environment
variables `WMS_<SECTION>__<KEY>` > `wms.toml` (found in the current folder or its parents) >
the defaults in `wms.config.sections` (and `wms.config.training`). Relative paths are
relative to the folder holding `wms.toml`.

`train.recipe` (wms.train.recipes) is a set of `[train]` values that sits at the level of the
source that named it: it replaces the keys weaker sources and the defaults set, and a key set
by the same source or a stronger one wins over it (`load_settings` applies it).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from wms.config.sections import (
    ComputeSettings,
    DataSettings,
    DeploySettings,
    GateMetric,
    GateSettings,
    GitSettings,
    MonitorSettings,
    ReadyProbe,
    Section,
    ServeSettings,
    StoreSettings,
    TrackingSettings,
)
from wms.config.training import TrainSettings
from wms.errors import ConfigError
from wms.train.recipes import recipe_values

__all__ = [
    "CONFIG_NAME",
    "ComputeSettings",
    "DataSettings",
    "DeploySettings",
    "GateMetric",
    "GateSettings",
    "GitSettings",
    "MonitorSettings",
    "Project",
    "ReadyProbe",
    "Section",
    "ServeSettings",
    "Settings",
    "StoreSettings",
    "TrackingSettings",
    "TrainSettings",
    "describe_validation_error",
    "find_config",
    "load_settings",
    "parse_overrides",
    "stray_env_variables",
    "with_recipe",
]

CONFIG_NAME = "wms.toml"


class Settings(BaseSettings):
    """All of WMS's settings. Build it with `load_settings`, never at import time."""

    model_config = SettingsConfigDict(
        env_prefix="WMS_", env_nested_delimiter="__", extra="forbid", toml_file=None
    )

    data: DataSettings = DataSettings()
    store: StoreSettings = StoreSettings()
    tracking: TrackingSettings = TrackingSettings()
    train: TrainSettings = TrainSettings()
    gate: GateSettings = GateSettings()
    compute: ComputeSettings = ComputeSettings()
    git: GitSettings = GitSettings()
    deploy: DeploySettings = DeploySettings()
    serve: ServeSettings = ServeSettings()
    monitor: MonitorSettings = MonitorSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init kwargs carry the CLI flags, so they come first.
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)


@dataclass(frozen=True)
class Project:
    """Settings plus the folder they belong to; every path WMS touches is resolved here."""

    root: Path
    settings: Settings
    config_file: Path | None = None

    def path(self, relative: Path | str) -> Path:
        """Resolve a configured path against the project root."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def state_dir(self) -> Path:
        return self.root / ".wms"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def tracking_uri(self) -> str:
        """The MLflow URI with a relative SQLite path made absolute."""
        uri = self.settings.tracking.uri
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
            return prefix + str(self.path(uri[len(prefix) :]))
        return uri


def find_config(start: Path) -> Path | None:
    """The nearest `wms.toml` in `start` or its parents."""
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn `["train.epochs=3", ...]` into a nested dict for the settings."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set {pair!r} is not SECTION.KEY=VALUE; write e.g. --set train.epochs=3")
        section, name = parts
        nested.setdefault(section, {})[name] = _parse_value(value.strip())
    return nested


def _parse_value(text: str) -> Any:
    # Values are read as TOML so lists and booleans work the same as in wms.toml.
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_settings(
    start: Path | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Project:
    """Build the project's settings once: flags > environment > wms.toml > defaults."""
    start = (start or Path.cwd()).resolve()
    if config_file is not None:
        config_file = config_file.resolve()
        if config_file.is_dir():
            raise ConfigError(
                f"config file {config_file} is a folder; name the file, e.g. {config_file / CONFIG_NAME}"
            )
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} not found; run `wms init` to write one")
    else:
        config_file = find_config(start)
    root = config_file.parent if config_file else start

    file_values: dict[str, Any] = {}
    if config_file is not None:
        try:
            file_values = tomllib.loads(config_file.read_text(encoding="utf-8"))  # TOML is UTF-8
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file} is not valid TOML ({exc}); fix that line") from None
        except UnicodeDecodeError as exc:  # saved in another encoding (Latin-1, UTF-16), or no text
            raise ConfigError(
                f"{config_file} is not UTF-8 text (byte {exc.start} cannot be read); save it as UTF-8"
            ) from None

    # Bind the file to a throwaway subclass: pydantic-settings reads the TOML path from the class.
    bound = type(
        "Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": config_file}}
    )
    overrides = overrides or {}
    try:
        settings = bound(**overrides)
        if settings.train.recipe:
            # Strongest first, as the sources are read; the environment as pydantic-settings reads it.
            train_keys = [
                _train_keys(overrides),
                _train_keys(EnvSettingsSource(bound)()),
                _train_keys(file_values),
            ]
            settings = settings.model_copy(update={"train": with_recipe(settings.train, train_keys)})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except SettingsError as exc:  # an environment variable pydantic-settings cannot parse as JSON
        raise ConfigError(_describe_env_error(exc)) from None
    return Project(root=root, settings=settings, config_file=config_file)


# WMS_ variables read by name, not as settings: the GitHub token, and the tests' fault injection.
NOT_SETTINGS = frozenset({"WMS_GITHUB_TOKEN", "WMS_FAULT_STAGE"})


def stray_env_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per `WMS_*` variable meant as a setting that sets nothing, naming the likely one.

    pydantic-settings passes over a variable whose section it does not know (`WMS_GATE_METRICS`
    with one underscore, `WMS_TRIAN__EPOCHS`): the run goes on with the value from wms.toml while
    the person believes theirs took effect. An unknown key in a known section is refused already.
    Only names shaped like a setting are named (a `__`, or a section and one `_`): other `WMS_*`
    variables of the environment (a tool's, a script's) are none of WMS's business.
    """
    sections = [name.upper() for name in Settings.model_fields]
    settings = [
        f"WMS_{section.upper()}__{key.upper()}"
        for section, field in Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        for key in field.annotation.model_fields
    ]
    lines = []
    for name in sorted(environ):
        upper = name.upper()  # pydantic-settings reads them case-insensitively
        rest = upper.removeprefix("WMS_")
        if rest == upper or upper in NOT_SETTINGS:
            continue
        if any(rest == section or rest.startswith(section + "__") for section in sections):
            continue  # read as a setting
        if "__" not in rest and not any(rest.startswith(section + "_") for section in sections):
            continue  # not shaped like a setting
        close = difflib.get_close_matches(upper, settings, n=1, cutoff=0.7)
        hint = (
            f"did you mean {close[0]}?"
            if close
            else "a setting is WMS_<SECTION>__<KEY>, e.g. WMS_TRAIN__EPOCHS"
        )
        lines.append(f"{name} is not a setting and was ignored; {hint}")
    return lines


def _train_keys(values: dict[str, Any]) -> set[str]:
    section = values.get("train")
    return set(section) if isinstance(section, dict) else set()


def with_recipe(train: TrainSettings, keys_by_source: list[set[str]]) -> TrainSettings:
    """`train` with its recipe applied at the level of the source that named it.

    `keys_by_source` holds the `[train]` keys each source set, strongest first. The recipe's
    values replace those that came from weaker sources or the defaults; a key set by the
    recipe's own source or a stronger one keeps its value.
    """
    level = next((i for i, keys in enumerate(keys_by_source) if "recipe" in keys), len(keys_by_source))
    kept = set().union(*keys_by_source[: level + 1])
    updates = {key: value for key, value in recipe_values(train.recipe).items() if key not in kept}
    return TrainSettings.model_validate({**train.model_dump(), **updates})


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad setting, its value and where to change it."""
    problems, keys = [], []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"] if not isinstance(part, int)]
        key = ".".join(loc[:2]) or "settings"
        keys.append(key)
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown setting {key}{_valid_keys_hint(loc)}")
        else:
            # A validator's own message already says what is wrong; pydantic's prefix adds nothing.
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"bad setting {key}={err.get('input')!r}: {message}")
    env = "WMS_" + keys[0].replace(".", "__").upper()
    return "; ".join(problems) + f" (check {CONFIG_NAME}, {env} and --set flags)"


def _describe_env_error(exc: SettingsError) -> str:
    """One line naming the WMS_ variable of a list, table or section that is not JSON."""
    match = re.search(r'field "(\w+)"', str(exc))
    section = match.group(1) if match else ""
    prefix = f"WMS_{section.upper()}"
    names = sorted(n for n in os.environ if n.upper() == prefix or n.upper().startswith(prefix + "__"))
    culprits = [
        n for n in names if _wants_json(section, n[len(prefix) + 2 :]) and not _is_json(os.environ[n])
    ]
    shown = ", ".join(f"{n}={os.environ[n]!r}" for n in culprits or names) or prefix
    return (
        f"cannot read {shown}: a list or table in an environment variable is written as JSON, "
        'e.g. WMS_GATE__METRICS=\'["dice", "iou"]\' or WMS_GATE__MAX_REGRESSION=\'{"iou": 0.01}\''
    )


def _wants_json(section: str, key: str) -> bool:
    """Whether pydantic-settings reads `WMS_<SECTION>__<KEY>` (or the section's own, key "") as JSON."""
    if not key:
        return True
    model = Settings.model_fields[section].annotation if section in Settings.model_fields else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return False
    field = model.model_fields.get(key.lower())
    return field is not None and typing.get_origin(field.annotation) in (list, dict)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _valid_keys_hint(loc: list[str]) -> str:
    if len(loc) >= 2 and loc[0] in Settings.model_fields:
        section = Settings.model_fields[loc[0]].annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            return f" (valid keys in [{loc[0]}]: {', '.join(section.model_fields)})"
    return f" (valid sections: {', '.join(Settings.model_fields)})"
