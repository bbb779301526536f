"""One entry point for trips, whatever their source: ``load_trips(month, source=...)``.

``source="synthetic"`` (the default) generates a calibrated month offline; ``source="tlc"``
downloads (or reads from the cache) the real TLC file through ``TLC_BASE_URL``.

:class:`MonthRequest` is the one way every level says "this month of data": month, source,
color, row cap, and for synthetic data the seed and the drift scenario. ``load_trips`` takes one,
or the same options as keywords.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from taxi_common.errors import BadInputError
from taxi_common.months import parse_month
from taxi_common.scenarios import Scenario, as_scenario
from taxi_common.settings import Settings

SOURCES: tuple[str, ...] = ("synthetic", "tlc")


def check_source(source: str) -> str:
    """``source`` if it is one of :data:`SOURCES`; a clear :class:`BadInputError` otherwise."""
    if source not in SOURCES:
        raise BadInputError(f"unknown data source {source!r}: use one of {', '.join(SOURCES)}")
    return source


@dataclass(frozen=True)
class MonthRequest:
    """One month of trips, and everything that decides which rows it gives.

    ``n_rows`` caps the rows (the first ones of a real file; a smaller synthetic month).
    ``seed`` and the scenario fields apply to synthetic data only. A request is checked when it
    is made: a malformed month, an unknown source, color or scenario, or a row cap below one is a
    :class:`BadInputError`.
    """

    month: str
    source: str = "synthetic"
    color: str = "green"
    n_rows: int | None = None
    seed: int = 0
    scenario: str = "baseline"
    scenario_start_day: int = 1
    scenario_strength: float = 1.0

    def __post_init__(self) -> None:
        from taxi_common.schema import trip_columns

        parse_month(self.month)
        check_source(self.source)
        trip_columns(self.color)  # raises for an unknown color
        if self.source == "synthetic" and self.color != "green":
            raise BadInputError("synthetic data follows the green taxi schema: use --color green")
        if self.n_rows is not None and self.n_rows < 1:
            raise BadInputError(f"row cap {self.n_rows} must be a positive number of rows")
        self.scenario_obj  # noqa: B018 - checks name, start day and strength

    @property
    def scenario_obj(self) -> Scenario:
        """The scenario as :class:`Scenario`."""
        return Scenario(self.scenario, self.scenario_start_day, self.scenario_strength)

    @property
    def label(self) -> str:
        """``"synthetic green 2021-01"``: how messages name the month."""
        return f"{self.source} {self.color} {self.month}"

    @classmethod
    def make(cls, month: str, *, source: str = "synthetic", color: str = "green",
             n_rows: int | None = None, seed: int = 0,
             scenario: Scenario | str = "baseline") -> MonthRequest:
        """A request from the usual arguments (scenario as a name or a :class:`Scenario`)."""
        sc = as_scenario(scenario)
        return cls(month, source, color, n_rows, seed, sc.name, sc.start_day, sc.strength)


def as_month_request(month: str | MonthRequest, *, source: str | None = None,
                     color: str | None = None, n_rows: int | None = None, seed: int | None = None,
                     scenario: Scenario | str | None = None) -> MonthRequest:
    """``month`` itself when it is a :class:`MonthRequest`, else a request from the options
    (an option left at None takes the default of :meth:`MonthRequest.make`).

    A request together with options is a programming error (which should win?): ``TypeError``.
    """
    options = {name: value for name, value in
               {"source": source, "color": color, "n_rows": n_rows, "seed": seed,
                "scenario": scenario}.items() if value is not None}
    if isinstance(month, MonthRequest):
        if options:
            raise TypeError(f"give a MonthRequest or options, not both ({', '.join(options)})")
        return month
    return MonthRequest.make(month, **options)  # type: ignore[arg-type]


def load_trips(
    month: str | MonthRequest,
    *,
    settings: Settings,
    source: str | None = None,
    color: str | None = None,
    n_rows: int | None = None,
    seed: int | None = None,
    scenario: Scenario | str | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Raw trips of one month, in the TLC schema of its color.

    ``month`` is a :class:`MonthRequest`, or ``YYYY-MM`` with the request's fields as keywords
    (defaults: synthetic, green, all rows, seed 0, baseline; see :class:`MonthRequest`).
    """
    request = as_month_request(month, source=source, color=color, n_rows=n_rows, seed=seed,
                               scenario=scenario)
    if request.source == "synthetic":
        from taxi_common.synthetic import generate_month

        return generate_month(request.month, seed=request.seed, scenario=request.scenario_obj,
                              n_rows=request.n_rows)
    from taxi_common.sources import load_month

    df = load_month(request.color, request.month, settings=settings, progress=progress)
    return df if request.n_rows is None else df.head(request.n_rows).reset_index(drop=True)
