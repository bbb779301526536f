"""Daily monitoring on real synthetic traffic, with no service and no Prefect server.

A linear model fitted on synthetic 2021-01 (baseline) is the champion; its reference is its
validation month 2021-02. Its predictions on synthetic 2021-03 are written to the prediction
log as if served at each trip's pickup time, with the actuals. With the thresholds shipped in
``monitoring.toml``: congestion fires an alert within three days of its onset (none before it);
30 baseline days fire none.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sqlalchemy import Engine

from level4_deployment import monitoring, store, traffic
from level4_deployment.monitoring_config import MonitoringConfig, load_config, parse_config
from level4_deployment.reference import Reference, load_reference, write_reference
from taxi_common.errors import BadInputError
from taxi_common.features import TripFeaturizer
from taxi_common.scenarios import Scenario
from taxi_common.settings import Settings
from tests.http_helpers import serving

pytestmark = pytest.mark.slow
FEATURES = ["PULocationID", "DOLocationID", "trip_distance"]
ONSET = 10  # congestion starts on 2021-03-10 (a Wednesday)
MARCH = dt.date(2021, 3, 1)


def march(day: int) -> dt.date:
    return MARCH.replace(day=day)


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pipeline, Reference, Settings]:
    """The champion fitted on synthetic 2021-01 and its reference (2021-02 with predictions)."""
    settings = Settings(workbook_home=tmp_path_factory.mktemp("monitoring") / "workbook")
    january = traffic.month_traffic("2021-01", settings=settings)
    model = make_pipeline(TripFeaturizer(), LinearRegression()).fit(january[FEATURES],
                                                                    january["duration"])
    path = write_reference(model, "2021-02", settings=settings, model_version="1",
                           path=settings.workbook_home / "reference.parquet")
    return model, load_reference(path), settings


def served_march(settings: Settings, model: Pipeline, scenario: Scenario | str,
                 days: range) -> Engine:
    """A fresh database holding ``days`` of March as served by ``model``, with actuals."""
    engine = store.engine_for(settings)
    store.create_tables(engine)
    month = traffic.month_traffic("2021-03", settings=settings, scenario=scenario)
    picked = month[month["pickup_datetime"].dt.day.isin(list(days))]
    store.write_predictions(engine, traffic.served_rows(picked, model, "1"))
    store.record_actuals(engine, traffic.actual_rows(picked))
    return engine


@pytest.fixture(scope="module")
def congestion(champion, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Settings, list[monitoring.DayResult], Engine]:
    """Days 8-17 of a congested March monitored with the shipped configuration."""
    model, reference, _ = champion
    settings = Settings(workbook_home=tmp_path_factory.mktemp("congestion") / "workbook")
    scenario = Scenario("congestion", start_day=ONSET, strength=1.0)
    engine = served_march(settings, model, scenario, range(ONSET - 2, ONSET + 8))
    results = monitoring.monitor_days([march(d) for d in range(ONSET - 2, ONSET + 8)],
                                      engine=engine, reference=reference, config=load_config(),
                                      settings=settings)
    return settings, results, engine


def test_the_reference_is_the_validation_month_with_the_champions_predictions(champion) -> None:
    model, reference, _ = champion
    assert (reference.model_version, reference.month) == ("1", "2021-02")
    assert list(reference.frame.columns) == [*FEATURES, "prediction", "duration"]
    assert len(reference.frame) > 60_000
    assert 5.0 < reference.mae < 6.5 and 7.5 < reference.rmse < 9.0


def test_congestion_fires_an_alert_within_three_days_of_its_onset(congestion) -> None:
    _, results, engine = congestion
    alerted = [r.day for r in results if r.alerts]
    assert alerted and march(ONSET) <= alerted[0] <= march(ONSET + 2)
    assert all(not r.alerts for r in results if r.day < march(ONSET))  # nothing before onset
    first = next(r for r in results if r.alerts)
    assert "mae_ratio" in {a["metric"] for a in first.alerts}
    stored = store.read_alerts(engine)
    assert len(stored) == sum(len(r.alerts) for r in results)
    assert stored["message"].str.contains("mae_ratio = 1.").any()


def test_congestion_moves_the_errors_not_the_inputs(congestion) -> None:
    """Slower trips with the same zones and distances: no input or prediction drift."""
    _, results, _ = congestion
    for r in results:
        assert r.metrics["drift_share"] == 0.0
        assert r.metrics["drift_prediction"] < 0.25
        assert r.metrics["missing_share"] == 0.0
    before = [r.metrics["mae_ratio"] for r in results if r.day < march(ONSET)]
    after = [r.metrics["mae_ratio"] for r in results if r.day >= march(ONSET)]
    assert max(before) < 1.12 < min(after)


def test_metrics_html_and_snapshots_are_stored_per_day(congestion) -> None:
    settings, results, engine = congestion
    metrics = store.read_metrics(engine)
    assert metrics["day"].nunique() == len(results) == 10
    row = metrics[(metrics["day"] == march(ONSET)) & (metrics["metric"] == "mae_ratio")]
    assert row["value"].iloc[0] == pytest.approx(results[2].metrics["mae_ratio"])
    assert set(row["model_version"]) == {"1"}
    for r in results:
        html = Path(r.html)
        assert html == settings.reports_dir / "monitoring" / f"{r.day}.html"
        text = html.read_bytes()
        assert text.lstrip().startswith(b"<!DOCTYPE html>") and len(text) > 100_000
        assert b"Wasserstein distance (normed)" in text and b"trip_distance" in text
    from level4_deployment.dashboard import open_project

    workspace, project = open_project(settings)
    assert len(workspace.list_runs(project.id)) == len(results)


def test_rerunning_a_day_replaces_its_numbers_and_does_not_repeat_alerts(congestion,
                                                                         champion) -> None:
    settings, results, engine = congestion
    _, reference, _ = champion
    before = store.read_metrics(engine)
    again = monitoring.monitor_day(march(ONSET), engine=engine, reference=reference,
                                   config=load_config(), settings=settings)
    assert again.alerts and again.new_alerts == 0
    after = store.read_metrics(engine)
    assert len(after) == len(before)
    assert len(store.read_alerts(engine)) == sum(len(r.alerts) for r in results)
    from level4_deployment.dashboard import open_project

    workspace, project = open_project(settings)
    assert len(workspace.list_runs(project.id)) == len(results)  # the day's snapshot replaced


def test_thirty_baseline_days_fire_no_alert(champion, tmp_path: Path) -> None:
    model, reference, _ = champion
    settings = Settings(workbook_home=tmp_path / "workbook")
    engine = served_march(settings, model, "baseline", range(1, 31))
    results = monitoring.monitor_days([march(d) for d in range(1, 31)], engine=engine,
                                      reference=reference, config=load_config(),
                                      settings=settings, html=False, workspace=False)
    assert [r.day for r in results if r.alerts] == []
    assert store.read_alerts(engine).empty
    assert max(r.metrics["mae_ratio"] for r in results) < 1.12
    assert min(r.rows for r in results) > 1000


# --- smaller cases: a handful of rows each ----------------------------------------------------

@pytest.fixture
def small_log(champion, tmp_path: Path) -> tuple[Settings, Engine, pd.DataFrame]:
    """Settings, an empty database, and 2021-03-10 of a congested March (traffic frame)."""
    settings = Settings(workbook_home=tmp_path / "workbook")
    engine = store.engine_for(settings)
    store.create_tables(engine)
    month = traffic.month_traffic("2021-03", settings=settings,
                                  scenario=Scenario("congestion", start_day=ONSET))
    return settings, engine, month[month["pickup_datetime"].dt.day == ONSET]


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        type(self).received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    """A local HTTP receiver on 127.0.0.1 that records the JSON POSTed to it."""
    _Receiver.received, _Receiver.status = [], 200
    with serving(_Receiver) as url:
        yield f"{url}/hook"


def with_webhook(url: str) -> MonitoringConfig:
    return parse_config({"alerts": {"webhook_url": url}})


def test_a_new_alert_is_posted_to_the_webhook_once(champion, small_log, webhook: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    model, reference, _ = champion
    settings, engine, day = small_log
    store.write_predictions(engine, traffic.served_rows(day, model, "1"))
    store.record_actuals(engine, traffic.actual_rows(day))
    options = {"engine": engine, "reference": reference, "config": with_webhook(webhook),
               "settings": settings, "html": False, "workspace": False}
    with caplog.at_level(logging.WARNING, logger="level4_deployment.monitoring"):
        result = monitoring.monitor_day(march(ONSET), **options)
    assert result.new_alerts == len(result.alerts) >= 1
    assert [m["metric"] for m in _Receiver.received] == [a["metric"] for a in result.alerts]
    posted = next(m for m in _Receiver.received if m["metric"] == "mae_ratio")
    assert posted["day"] == "2021-03-10" and posted["model_version"] == "1"
    assert posted["value"] > posted["threshold"] == 1.12
    assert posted["message"].startswith("2021-03-10: mae_ratio = ")
    assert "ALERT 2021-03-10: mae_ratio" in caplog.text
    monitoring.monitor_day(march(ONSET), **options)  # a re-run: no second notification
    assert len(_Receiver.received) == len(result.alerts)


def test_a_failing_webhook_is_logged_and_the_alert_still_stored(
        champion, small_log, webhook: str, caplog: pytest.LogCaptureFixture) -> None:
    model, reference, _ = champion
    settings, engine, day = small_log
    store.write_predictions(engine, traffic.served_rows(day, model, "1"))
    store.record_actuals(engine, traffic.actual_rows(day))
    _Receiver.status = 503
    with caplog.at_level(logging.WARNING, logger="level4_deployment.monitoring"):
        result = monitoring.monitor_day(march(ONSET), engine=engine, reference=reference,
                                        config=with_webhook(webhook), settings=settings,
                                        html=False, workspace=False)
    assert result.alerts and "alert webhook" in caplog.text and "503" in caplog.text
    assert len(store.read_alerts(engine)) == len(result.alerts)


def test_a_day_without_traffic_stores_zero_rows_and_no_report(champion, small_log) -> None:
    _, reference, _ = champion
    settings, engine, _ = small_log
    result = monitoring.monitor_day(march(3), engine=engine, reference=reference,
                                    config=load_config(), settings=settings)
    assert (result.rows, result.alerts, result.html) == (0, [], None)
    stored = store.read_metrics(engine).set_index("metric")["value"].to_dict()
    assert stored == {"rows": 0.0, "labelled_rows": 0.0}


def test_without_enough_actuals_errors_are_stored_but_not_alerted(champion, small_log) -> None:
    model, reference, _ = champion
    settings, engine, day = small_log
    store.write_predictions(engine, traffic.served_rows(day, model, "1"))
    store.record_actuals(engine, traffic.actual_rows(day.iloc[:100]))  # most actuals not in yet
    result = monitoring.monitor_day(march(ONSET), engine=engine, reference=reference,
                                    config=load_config(), settings=settings, html=False,
                                    workspace=False)
    assert result.metrics["labelled_rows"] == 100 and result.metrics["mae_ratio"] > 1.0
    assert result.alerts == []  # 100 < min_labelled_rows: too few to judge
    assert result.metrics["drift_share"] is not None  # drift needs no actuals


def test_replayed_trips_are_placed_in_days_by_pickup(champion, small_log) -> None:
    model, reference, _ = champion
    settings, engine, day = small_log
    rows = traffic.served_rows(day, model, "1")
    for row in rows:
        row["logged_at"] = dt.datetime(2026, 1, 1, 12, 0)  # replayed today
    store.write_predictions(engine, rows)
    store.record_actuals(engine, traffic.actual_rows(day))
    assert monitoring.day_traffic(engine, march(ONSET)).empty
    by_pickup = monitoring.day_traffic(engine, march(ONSET), by="pickup")
    assert len(by_pickup) == len(day)
    result = monitoring.monitor_day(march(ONSET), engine=engine, reference=reference,
                                    config=load_config(), settings=settings, by="pickup",
                                    html=False, workspace=False)
    assert result.rows == len(day) and result.alerts


def test_only_the_champions_traffic_is_monitored(champion, small_log) -> None:
    model, _, _ = champion
    _, engine, day = small_log
    store.write_predictions(engine, traffic.served_rows(day.iloc[:30], model, "2",
                                                        variant="challenger"))
    store.write_predictions(engine, traffic.served_rows(day.iloc[30:50], model, "1"))
    assert len(monitoring.day_traffic(engine, march(ONSET))) == 20


def test_missing_values_are_measured_per_column_and_unknown_actuals_do_not_count(
        champion) -> None:
    _, reference, _ = champion
    current = reference.frame.iloc[:1000].copy()
    current.loc[:99, "trip_distance"] = float("nan")  # 10% of one of the four columns
    current.loc[:799, "duration"] = float("nan")  # actuals not known yet: not "missing"
    snapshot = monitoring.build_report(monitoring._report_frame(current),
                                       monitoring._report_frame(reference.frame.iloc[1000:3000]),
                                       load_config(), day=march(5), model_version="1")
    values = monitoring.snapshot_values(snapshot)
    assert values["missing_trip_distance"] == pytest.approx(0.1)
    assert values["missing_prediction"] == 0.0
    assert values["missing_share"] == pytest.approx(0.1 / 4)
    assert values["evaluated_rows"] == 1000 and "rmse" in values


def test_breaches_are_values_above_their_thresholds_with_enough_rows() -> None:
    config = load_config()
    values = {"evaluated_rows": 2000, "evaluated_labelled_rows": 2000, "drift_share": 0.75,
              "drift_prediction": 0.1, "missing_share": 0.0, "mae_ratio": 1.12,
              "rmse_ratio": 1.3}
    found = monitoring.breaches(values, config, march(5))
    assert [a["metric"] for a in found] == ["drift_share", "rmse_ratio"]  # 1.12 is not above
    assert found[0]["message"] == ("2021-03-05: drift_share = 0.750 > 0.5 (share of drifted "
                                   "inputs and prediction)")
    few = {**values, "evaluated_rows": 100, "evaluated_labelled_rows": 100}
    assert monitoring.breaches(few, config, march(5)) == []


def test_day_range_and_parse_day() -> None:
    assert monitoring.day_range(march(30), dt.date(2021, 4, 2)) == [
        march(30), march(31), dt.date(2021, 4, 1), dt.date(2021, 4, 2)]
    with pytest.raises(BadInputError, match="before"):
        monitoring.day_range(march(5), march(4))
    with pytest.raises(BadInputError, match="at most 366"):
        monitoring.day_range(dt.date(2020, 1, 1), dt.date(2021, 3, 1))
    with pytest.raises(BadInputError, match="YYYY-MM-DD"):
        monitoring.parse_day("2021-3-5x")


def test_load_reference_names_a_bad_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        load_reference(tmp_path / "missing.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(BadInputError, match="not a parquet file"):
        load_reference(tmp_path / "junk.parquet")
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(BadInputError, match="lacks the columns"):
        load_reference(tmp_path / "other.parquet")
