"""MonthRequest: the one way every level says "this month of data", and load_trips taking it."""

from __future__ import annotations

import pandas as pd
import pytest

from taxi_common.data import MonthRequest, as_month_request, load_trips
from taxi_common.errors import BadInputError
from taxi_common.scenarios import Scenario
from taxi_common.settings import Settings


def test_make_takes_a_scenario_by_name_or_as_an_object() -> None:
    by_name = MonthRequest.make("2021-01", n_rows=100, scenario="congestion")
    by_object = MonthRequest.make("2021-01", n_rows=100, scenario=Scenario("congestion", 10, 2.0))
    assert by_name.scenario_obj == Scenario("congestion")
    assert (by_object.scenario, by_object.scenario_start_day, by_object.scenario_strength) == \
        ("congestion", 10, 2.0)
    assert by_name.label == "synthetic green 2021-01"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"month": "2021-13"}, "not of the form YYYY-MM"),
    ({"source": "s3"}, "unknown data source 's3'"),
    ({"color": "blue", "source": "tlc"}, "unknown taxi color 'blue'"),
    ({"color": "yellow"}, "synthetic data follows the green taxi schema"),
    ({"n_rows": 0}, "row cap 0 must be a positive number"),
    ({"scenario": "meteor"}, "unknown scenario 'meteor'"),
    ({"scenario_start_day": 40}, "start day 40"),
])
def test_a_request_is_checked_when_it_is_made(kwargs: dict, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        MonthRequest(**{"month": "2021-01", **kwargs})


def test_load_trips_takes_a_request_or_the_same_options_as_keywords(settings: Settings) -> None:
    request = MonthRequest.make("2021-03", n_rows=400, seed=2, scenario="hotspot")
    by_request = load_trips(request, settings=settings)
    by_keywords = load_trips("2021-03", settings=settings, n_rows=400, seed=2,
                             scenario="hotspot")
    pd.testing.assert_frame_equal(by_request, by_keywords)
    assert len(by_request) == 400
    assert not load_trips("2021-03", settings=settings, n_rows=400).equals(by_request)


def test_a_request_and_options_together_are_refused() -> None:
    request = MonthRequest("2021-01")
    assert as_month_request(request) is request
    assert as_month_request("2021-01", n_rows=5) == MonthRequest("2021-01", n_rows=5)
    with pytest.raises(TypeError, match="not both \\(source\\)"):
        as_month_request(request, source="tlc")

