"""`wms init`: write a commented wms.toml and ignore WMS's local state in git."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import typer

from wms.cli._common import console
from wms.config import CONFIG_NAME
from wms.errors import UsageError

GITIGNORE_LINES = [".wms/"]


def template() -> str:
    """The commented default settings file shipped with WMS."""
    return files("wms").joinpath("wms.toml").read_text()


def init(
    directory: Path = typer.Argument(Path("."), help="Folder for wms.toml (created if missing)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing wms.toml."),
) -> None:
    """Write a commented **wms.toml** with the defaults, and add `.wms/` to .gitignore."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CONFIG_NAME
    if target.exists() and not force:
        raise UsageError(f"{target} already exists; edit it, or pass --force to overwrite it")
    target.write_text(template())
    gitignore = directory / ".gitignore"
    present = gitignore.read_text().splitlines() if gitignore.exists() else []
    missing = [line for line in GITIGNORE_LINES if line not in present]
    if missing:
        with gitignore.open("a") as fh:
            if present and present[-1].strip():
                fh.write("\n")
            fh.write("\n".join(["# WMS local state (MLflow DB, dataset store, runs)", *missing]) + "\n")
    console.print(f"wrote {target}; edit it or override keys with WMS_<SECTION>__<KEY> variables")
