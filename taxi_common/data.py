"""One entry point for trips, whatever their source: ``load_trips(month, source=...)``.

``source="synthetic"`` (the default) generates a calibrated month offline; ``source="tlc"``
downloads (or reads from the cache) the real TLC file through ``TLC_BASE_URL``.
"""

from __future__ import annotations

import pandas as pd

from taxi_common.errors import BadInputError
from taxi_common.months import parse_month
from taxi_common.scenarios import Scenario
from taxi_common.settings import Settings

SOURCES: tuple[str, ...] = ("synthetic", "tlc")


def check_source(source: str) -> str:
    """``source`` if it is one of :data:`SOURCES`; a clear :class:`BadInputError` otherwise."""
    if source not in SOURCES:
        raise BadInputError(f"unknown data source {source!r}: use one of {', '.join(SOURCES)}")
    return source


def load_trips(
    month: str,
    *,
    settings: Settings,
    source: str = "synthetic",
    color: str = "green",
    n_rows: int | None = None,
    seed: int = 0,
    scenario: Scenario | str = "baseline",
    progress: bool = False,
) -> pd.DataFrame:
    """Raw trips of one month, in the TLC schema of ``color``.

    ``n_rows`` caps the rows (the first ones of a real file; a smaller synthetic month).
    ``seed`` and ``scenario`` (a name, or a :class:`Scenario` with start day and strength)
    apply to synthetic data only.
    """
    parse_month(month)
    if check_source(source) == "synthetic":
        from taxi_common.synthetic import generate_month

        if color != "green":
            raise BadInputError("synthetic data follows the green taxi schema: use --color green")
        return generate_month(month, seed=seed, scenario=scenario, n_rows=n_rows)
    from taxi_common.sources import load_month

    df = load_month(color, month, settings=settings, progress=progress)
    return df if n_rows is None else df.head(n_rows).reset_index(drop=True)
