"""What validation found: one `Issue` per bad file, and the `ValidationReport` the CLI and CI read.

The report's JSON shape and its issue codes are a contract with the CLI and CI (see
`wms.data.validate`); its Markdown is what a commit comment and a job summary show.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Issue", "ValidationReport"]

# Files a Markdown report names one by one (a GitHub comment holds at most 65536 characters).
_LISTED_ERRORS = 200


@dataclass(frozen=True)
class Issue:
    """One problem with one file; `message` says how to fix it."""

    code: str
    severity: str  # "error" or "warning"
    path: str
    message: str


@dataclass
class ValidationReport:
    """Outcome of `validate_dataset`: ok when there is no error (warnings allowed)."""

    ok: bool
    pairs: int
    issues: list[Issue]
    stats: dict[str, Any]

    @property
    def errors(self) -> list[Issue]:
        """Issues that make the dataset unusable."""
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        """Issues worth knowing about that do not block use."""
        return [i for i in self.issues if i.severity == "warning"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: {"ok", "pairs", "issues": [{"code", "severity", "path", "message"}], "stats"}."""
        return {
            "ok": self.ok,
            "pairs": self.pairs,
            "issues": [asdict(i) for i in self.issues],
            "stats": self.stats,
        }

    def to_markdown(self) -> str:
        """Summary line, a table row per issue code with its first example, then every file with an error."""
        verdict = "ok" if self.ok else "NOT ok"
        counts_line = f"{self.pairs} pairs, {len(self.errors)} errors, {len(self.warnings)} warnings"
        lines = [f"**Dataset {verdict}**: {counts_line}"]
        if not self.issues:
            return lines[0] + "\n"
        first: dict[str, Issue] = {}
        counts: Counter[str] = Counter()
        for issue in self.issues:
            first.setdefault(issue.code, issue)
            counts[issue.code] += 1
        lines += ["", "| code | severity | count | example | how to fix |", "|---|---|---|---|---|"]
        for code, issue in first.items():
            message = issue.message.replace("|", "\\|")
            lines.append(f"| {code} | {issue.severity} | {counts[code]} | `{issue.path}` | {message} |")
        errors = self.errors
        if len(errors) > len({i.code for i in errors}):  # the table's examples leave some out
            lines += ["", f"Every file with an error ({len(errors)}):", ""]
            lines += [f"- `{i.path}`: {i.code}" for i in errors[:_LISTED_ERRORS]]
            if len(errors) > _LISTED_ERRORS:
                lines.append(f"- … {len(errors) - _LISTED_ERRORS} more: `wms data validate` lists them all")
        return "\n".join(lines) + "\n"
