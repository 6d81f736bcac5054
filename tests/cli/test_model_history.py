"""`wms model history` as an operator meets it when the ledger on disk was damaged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MOVE = {"at": "2026-11-20T10:00:00+00:00", "action": "promote", "from_version": None, "to_version": "1"}


@pytest.mark.parametrize("args", [(), ("--at", "2026-11-26T12:00"), ("--json",)])
def test_a_ledger_left_with_merge_markers_is_one_line_naming_the_file_and_line(
    cli: Callable[..., Any], project_dir: Path, args: tuple[str, ...]
) -> None:
    ledger = project_dir / "models" / "production_history.jsonl"
    ledger.parent.mkdir()
    ledger.write_text(f"{json.dumps(MOVE)}\n<<<<<<< HEAD\n{json.dumps(MOVE | {'to_version': '2'})}\n")
    result = cli("model", "history", *args)
    assert result.exit_code == 1
    assert "production_history.jsonl line 2 is not a recorded move" in result.output
    assert "git checkout -- " in result.output
    assert "Traceback" not in result.output


def test_a_line_without_a_time_is_refused_too(cli: Callable[..., Any], project_dir: Path) -> None:
    ledger = project_dir / "models" / "production_history.jsonl"
    ledger.parent.mkdir()
    ledger.write_text(json.dumps({"action": "promote", "to_version": "1"}) + "\n")
    result = cli("model", "history", "--at", "2026-11-26T12:00")
    assert result.exit_code == 1
    assert "production_history.jsonl line 1 is not a recorded move" in result.output


def test_an_intact_ledger_still_says_what_served_then(cli: Callable[..., Any], project_dir: Path) -> None:
    ledger = project_dir / "models" / "production_history.jsonl"
    ledger.parent.mkdir()
    ledger.write_text(json.dumps(MOVE | {"reason": "first", "by": "test"}) + "\n")
    result = cli("model", "history", "--at", "2026-11-26T12:00")
    assert result.exit_code == 0, result.output
    assert "version 1 was in production at 2026-11-26T12:00 (promote" in result.output
