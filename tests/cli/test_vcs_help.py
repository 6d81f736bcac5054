"""The git commands explain themselves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

COMMANDS = [
    "hooks",
    "hooks install",
    "hooks uninstall",
    "hook pre-push",
    "vcs",
    "vcs publish",
    "vcs comment-validation",
    "vcs runners",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_git_command_explains_itself(cli: Callable[..., Any], command: str) -> None:
    result = cli(*command.split(), "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_root_help_lists_the_git_groups(cli: Callable[..., Any]) -> None:
    output = cli("--help").output
    assert all(name in output for name in ("hooks", "vcs"))
