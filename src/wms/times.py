"""Times read back from records, tags and answers: ISO 8601 text to an aware datetime, one way.

WMS writes every time as aware UTC ISO text (`datetime.now(UTC).isoformat()`), but what it reads
back may come from GitHub ("2026-12-06T12:00:00Z"), from a file or tag edited by hand, or from an
older WMS. `parse_time` takes a naive time as UTC and gives None for anything that is not a time,
so no caller compares a naive datetime with an aware one (a TypeError) or stops on a bad tag.
The production ledger is the one reader that refuses a naive time (wms.production): there a
time without its zone is a line someone wrote by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time(text: str | None) -> datetime | None:
    """`text` as an aware datetime (naive: UTC), or None when it is not an ISO 8601 time."""
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
