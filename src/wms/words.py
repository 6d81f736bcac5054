"""How a list reads in one line of output: the first few names, then how many there are."""

from __future__ import annotations

from collections.abc import Sequence


def first_few(names: Sequence[str], shown: int) -> str:
    """ "a, b, c" when there are `shown` names or fewer; "a, b, c, … 12 in all" when more."""
    text = ", ".join(names[:shown])
    return text + (f", … {len(names)} in all" if len(names) > shown else "")
