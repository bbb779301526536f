"""With failures injected the loop keeps the champion, records why, and goes on the next day
(14 baseline days; the 90 days without drift are in ``test_baseline.py``, a file of their own so
that the two test workers can run them beside the congestion simulation)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from level5_automation.simulation import Fault

from .conftest import day, run_simulation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory, mlflow_cache: Path) -> Any:
    faults = (Fault("retrain-error", day("2021-01-05")),
              Fault("worse-challenger", day("2021-01-06")),
              Fault("tracking-down", day("2021-01-08")),
              Fault("bad-promotion", day("2021-01-10")))
    return run_simulation(tmp_path_factory.mktemp("faults") / "sim", mlflow_cache,
                          scenario="baseline", start=day("2021-01-01"), days=14,
                          rows_per_day=1000, faults=faults)


def _champion_on(result: Any, date: dt.date) -> str | None:
    return next(d.champion for d in result.days if d.date == date)


def test_a_retrain_that_raises_keeps_the_champion_and_the_next_day_runs(faulty: Any) -> None:
    error = next(e for e in faulty.events_of("error") if e.day == day("2021-01-05"))
    assert error.details == {"step": "retrain", "error": "RuntimeError"}
    assert "injected fault: training on" in error.reason
    assert error.reason.endswith("the champion stays v1")
    assert _champion_on(faulty, day("2021-01-06")) == "1"
    assert day("2021-01-06") in {d.date for d in faulty.days}
    assert faulty.events_of("alert") == []


def test_a_worse_challenger_is_rejected_by_the_promotion_rule(faulty: Any) -> None:
    retrain = next(e for e in faulty.events_of("retrain") if e.day == day("2021-01-06"))
    reject = next(e for e in faulty.events_of("reject") if e.version == retrain.version)
    assert reject.day == day("2021-01-06")
    assert "improvement: RMSE" in reject.reason
    failed = {c["name"] for c in reject.details["checks"] if not c["passed"]}
    assert failed == {"improvement"}
    assert reject.details["candidate_rmse"] > reject.details["champion_rmse"]
    assert _champion_on(faulty, day("2021-01-07")) == "1"


def test_a_tracking_store_that_is_down_is_an_error_and_the_service_keeps_serving(
        faulty: Any) -> None:
    error = next(e for e in faulty.events_of("error") if e.day == day("2021-01-08"))
    assert error.details["step"] == "registry"
    assert "could not be read" in error.reason or "failed" in error.reason
    assert _champion_on(faulty, day("2021-01-08")) == "1"
    assert _champion_on(faulty, day("2021-01-09")) == "1"


def test_a_bad_promotion_is_rolled_back_by_the_watch(faulty: Any) -> None:
    forced = next(e for e in faulty.events_of("promote") if e.details.get("forced"))
    assert forced.day == day("2021-01-10")
    assert _champion_on(faulty, day("2021-01-11")) == forced.version  # it did serve
    rollback = faulty.events_of("rollback")[0]
    assert rollback.version == "1" and rollback.details["rolled_back"] == forced.version
    assert rollback.day - forced.day <= dt.timedelta(days=3)
    assert rollback.details["live_rmse"] > 1.05 * rollback.details["previous_rmse"]
    assert "back to v1" in rollback.reason
    after = [d for d in faulty.days if d.date > rollback.day]
    assert after and all(d.champion == "1" for d in after)
