"""The project's documentation as the tests read it: README.md and the pages under docs/."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))


def page(name: str) -> str:
    """One page, by its path in the repository (`README.md`, `docs/aws.md`)."""
    return (ROOT / name).read_text()


def all_docs() -> str:
    """Every page, the README first, as one text: a sentence is found on whichever page holds it."""
    return "\n\n".join(path.read_text() for path in PAGES)
