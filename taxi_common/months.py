"""Months as ``YYYY-MM`` strings, the way every command takes them."""

from __future__ import annotations

import re

from taxi_common.errors import BadInputError

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def parse_month(text: str) -> tuple[int, int]:
    """``"2021-01"`` -> ``(2021, 1)``; a clear :class:`BadInputError` for anything else."""
    match = _MONTH.match(text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise BadInputError(f"month {text!r} is not of the form YYYY-MM (for example 2021-01)")
    return int(match.group(1)), int(match.group(2))


def format_month(year: int, month: int) -> str:
    """``(2021, 1)`` -> ``"2021-01"``."""
    return f"{year:04d}-{month:02d}"


def next_month(text: str) -> str:
    """The month after ``text``: ``"2021-12"`` -> ``"2022-01"``."""
    year, month = parse_month(text)
    return format_month(year + month // 12, month % 12 + 1)
