"""Which variant serves a ride: a sticky, salted SHA-256 bucket of its ``ride_id``.

``bucket(ride_id)`` maps a ride id to a number in [0, 1) from the first 8 bytes of
``sha256(salt + ":" + ride_id)``: the same in every worker process, after a restart and on every
machine (Python's ``hash()`` of a string is salted per process, so it would send a ride to a
different variant in each gunicorn worker). A ride goes to the challenger when its bucket is below
the challenger's share. Without a ride id the choice is random, per request.
"""

from __future__ import annotations

import hashlib
import random

CHAMPION, CHALLENGER = "champion", "challenger"
DEFAULT_SALT = "taxi-duration-ab"
_SCALE = float(1 << 64)


def bucket(ride_id: str, salt: str = DEFAULT_SALT) -> float:
    """The ride's position in [0, 1), stable across processes and restarts."""
    digest = hashlib.sha256(f"{salt}:{ride_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def choose_variant(ride_id: str | None, challenger_share: float, *, salt: str = DEFAULT_SALT,
                   rng: random.Random | None = None) -> str:
    """``challenger`` for ``challenger_share`` of rides (sticky by ``ride_id``), else champion."""
    if challenger_share <= 0.0:
        return CHAMPION
    point = bucket(ride_id, salt) if ride_id is not None else (rng or random).random()
    return CHALLENGER if point < challenger_share else CHAMPION


def parse_ab(spec: str | None) -> float:
    """``--ab challenger=10`` → 0.10; None or empty → 0 (no A/B)."""
    from taxi_common.errors import BadInputError

    if not spec:
        return 0.0
    name, _, value = spec.partition("=")
    try:
        percent = float(value)
    except ValueError:
        percent = float("nan")
    if name.strip() != CHALLENGER or not 0.0 <= percent <= 100.0:
        raise BadInputError(f"--ab {spec!r}: write challenger=P with P the challenger's percent "
                            "of rides, 0-100 (for example challenger=10)")
    return percent / 100.0
