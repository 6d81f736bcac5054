"""Long lists in one line of output: the pull's replaced files, the hook's refusal, the sweeper's
deleted branches and a batch's corrected masks name a few and say how many there are."""

from __future__ import annotations

from wms.data.merge import corrections
from wms.words import first_few


def test_a_long_list_names_the_first_few_and_counts_them_all() -> None:
    assert first_few(["a", "b", "c"], 3) == "a, b, c"
    assert first_few([f"p{i}" for i in range(12)], 3) == "p0, p1, p2, … 12 in all"
    assert first_few([], 3) == ""
    ids = [f"{i:02d}" for i in range(25)]
    assert corrections(ids).endswith(": 00, 01, 02, 03, 04, 05, 06, 07, 08, 09, … 25 in all")
