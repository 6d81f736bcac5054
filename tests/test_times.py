"""wms.times.parse_time: every time WMS reads back, whoever wrote it, as an aware datetime or None."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wms.times import parse_time

NOON = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-06T12:00:00+00:00",  # as WMS writes it
        "2026-12-06T12:00:00Z",  # as GitHub gives it
        "2026-12-06T13:00:00+01:00",  # another zone
        "2026-12-06T12:00:00",  # naive, written by hand: taken as UTC
        " 2026-12-06T12:00:00.000000+00:00\n",  # microseconds, and a line read from a file
    ],
)
def test_a_time_in_any_of_the_ways_it_is_written_is_the_same_moment(text: str) -> None:
    parsed = parse_time(text)
    assert parsed == NOON and parsed.tzinfo is not None


@pytest.mark.parametrize("text", ["", "None", "yesterday", "2026-13-01T00:00:00", None])
def test_what_is_not_a_time_is_none(text: str | None) -> None:
    assert parse_time(text) is None
