"""Every command's --help as a user reads it: what its help text says in angle brackets reaches
the screen, and no flag looks as if it took a value."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from wms.cli.main import app

PLACEHOLDER = re.compile(r"<[A-Za-z_][\w -]*>")  # <stem>, <holder>, <GITHUB_RUN_ID>


def commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from commands(command, (*path, name))


ALL = list(commands(typer.main.get_command(app)))


@pytest.mark.parametrize(("path", "command"), ALL, ids=[" ".join(p) or "wms" for p, _ in ALL])
def test_help_keeps_every_placeholder_and_shows_no_type_beside_a_flag(
    path: tuple[str, ...], command: Any
) -> None:
    """The help is Markdown: `<holder>` outside a code span is an HTML tag, dropped without a word
    ("holder -sweep"); typer's panel showed `<bool>` beside every flag, --help included."""
    shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "400"}).output
    texts = [command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]
    for placeholder in {m for text in texts for m in PLACEHOLDER.findall(text)}:
        assert placeholder in shown, f"wms {' '.join(path)} --help drops {placeholder}"
    assert "<bool>" not in shown
