"""The monitoring flow on the session's Prefect server: one task run per day."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline

from level4_deployment import store, traffic
from level4_deployment.reference import write_reference
from taxi_common.features import TripFeaturizer
from taxi_common.scenarios import Scenario
from taxi_common.settings import Settings

pytestmark = pytest.mark.slow
FEATURES = ["PULocationID", "DOLocationID", "trip_distance"]


def test_monitor_flow_runs_each_day_and_stores_its_numbers(prefect_api: str,
                                                           tmp_path: Path) -> None:
    settings = Settings(workbook_home=tmp_path / "workbook")
    january = traffic.month_traffic("2021-01", settings=settings, rows=20_000)
    model = make_pipeline(TripFeaturizer(), LinearRegression()).fit(january[FEATURES],
                                                                    january["duration"])
    reference = write_reference(model, "2021-02", settings=settings, rows=20_000,
                                model_version="1", path=tmp_path / "reference.parquet")
    march = traffic.trips_for_days("2021-03", [9, 10], settings=settings,
                                   scenario=Scenario("congestion", start_day=10))
    engine = store.engine_for(settings)
    store.create_tables(engine)
    store.write_predictions(engine, traffic.served_rows(march, model, "1"))
    store.record_actuals(engine, traffic.actual_rows(march))

    from level4_deployment.flows import monitor_flow

    results = monitor_flow(reference_path=str(reference), start="2021-03-09", end="2021-03-10",
                           workbook_home=str(settings.workbook_home))
    assert [r["day"] for r in results] == ["2021-03-09", "2021-03-10"]
    assert not results[0]["alerts"] and results[1]["alerts"]  # congestion from the 10th
    metrics = store.read_metrics(engine, metrics=["mae_ratio"])
    assert metrics["day"].tolist() == [dt.date(2021, 3, 9), dt.date(2021, 3, 10)]
    assert Path(results[1]["html"]).is_file()
    single = monitor_flow(reference_path=str(reference), day="2021-03-10",
                          workbook_home=str(settings.workbook_home))
    assert single[0]["alerts"] == results[1]["alerts"] and single[0]["new_alerts"] == 0
