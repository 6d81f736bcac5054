"""Every third-party action runs at a fixed commit: a tag can be moved to other code, which would
then run on the self-hosted runners with the job's secrets."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"uses:\s*(\S+)\s+# v\d+(\.\d+)*\s*$")


def action_files() -> list[Path]:
    return sorted(
        [
            *(ROOT / ".github" / "workflows").glob("*.yaml"),
            *(ROOT / ".github" / "actions").glob("*/action.yaml"),
        ]
    )


def uses(node: object) -> list[str]:
    """Every `uses:` value in a workflow or composite action."""
    if isinstance(node, dict):
        found = [str(v) for k, v in node.items() if k == "uses"]
        return found + [u for v in node.values() for u in uses(v)]
    if isinstance(node, list):
        return [u for v in node for u in uses(v)]
    return []


def test_third_party_actions_are_pinned_by_commit_with_their_version_beside() -> None:
    checked = 0
    for path in action_files():
        text = path.read_text()
        for ref in uses(yaml.safe_load(text)):
            if ref.startswith("./"):  # this repository's own actions and reusable workflows
                continue
            checked += 1
            assert PINNED.match(ref), f"{path.name}: {ref} is not pinned to a 40-character commit"
            (line,) = {line.strip() for line in text.splitlines() if f"uses: {ref}" in line}
            assert VERSION_COMMENT.search(line), f"{path.name}: {line!r} does not say which version it is"
    assert checked >= 10  # the checkouts, setup-python, setup-helm and setup-terraform


def test_dependabot_proposes_updates_for_the_pinned_actions() -> None:
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    ecosystems = {u["package-ecosystem"]: u for u in config["updates"]}
    assert ecosystems["github-actions"]["directory"] == "/"
