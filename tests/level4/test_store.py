"""The shared tables, on SQLite and on PostgreSQL for real (the ``engine`` fixture runs both)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, func, inspect, select, text

from level4_deployment import store
from taxi_common.errors import BadInputError
from taxi_common.settings import Settings

T0 = dt.datetime(2021, 3, 5, 8, 0)


def prediction(i: int, **overrides: object) -> dict[str, object]:
    """A prediction-log row; ride ``r<i>``, logged ``i`` minutes after T0."""
    row: dict[str, object] = {
        "request_id": f"req-{i}", "logged_at": T0 + dt.timedelta(minutes=i), "ride_id": f"r{i}",
        "PULocationID": 74, "DOLocationID": 75, "trip_distance": 1.5 + i,
        "variant": "champion", "model_version": "3", "prediction": 10.0 + i,
    }
    row.update(overrides)
    return row


def actual(i: int, minutes: float, pickup: dt.datetime | None = None) -> dict[str, object]:
    pickup = pickup or T0 + dt.timedelta(minutes=i)
    return {"ride_id": f"r{i}", "pickup_datetime": pickup,
            "dropoff_datetime": pickup + dt.timedelta(minutes=minutes), "duration": minutes}


def test_default_database_is_sqlite_under_workbook_home(tmp_path: Path) -> None:
    settings = Settings(workbook_home=tmp_path / "home")
    assert store.database_url(settings) == f"sqlite:///{tmp_path / 'home' / 'level4.db'}"


@pytest.mark.parametrize("given", ["postgresql://u@127.0.0.1:5432/db",
                                   "postgres://u@127.0.0.1:5432/db"])
def test_bare_postgresql_url_is_mapped_to_psycopg2(tmp_path: Path, given: str) -> None:
    settings = Settings(workbook_home=tmp_path, database_url=given)
    assert store.database_url(settings) == "postgresql+psycopg2://u@127.0.0.1:5432/db"


def test_explicit_driver_and_password_are_kept(tmp_path: Path) -> None:
    given = "postgresql+psycopg2://u:secret@127.0.0.1:5432/db"
    assert store.database_url(Settings(workbook_home=tmp_path, database_url=given)) == given


@pytest.mark.parametrize("given", ["mysql://u@127.0.0.1/db", "not a url"])
def test_unsupported_database_url_is_a_user_error(tmp_path: Path, given: str) -> None:
    with pytest.raises(BadInputError, match="DATABASE_URL"):
        store.database_url(Settings(workbook_home=tmp_path, database_url=given))


def test_sqlite_connections_use_wal_and_a_busy_timeout(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() == \
            store.SQLITE_BUSY_TIMEOUT_MS


@pytest.mark.postgres
def test_postgresql_engine_uses_psycopg2_and_the_private_schema(
        tmp_path: Path, pg_schema: str) -> None:
    settings = Settings(workbook_home=tmp_path, database_url="postgresql://postgres@127.0.0.1/test")
    engine = store.engine_for(settings, schema=pg_schema)
    try:
        store.create_tables(engine)
        assert engine.dialect.driver == "psycopg2"
        tables = set(inspect(engine).get_table_names(schema=pg_schema))
        assert {"predictions", "actuals", "monitoring_metrics", "alerts"} <= tables
        assert "predictions" not in inspect(engine).get_table_names(schema="public")
        assert not (tmp_path / "level4.db").exists()
    finally:
        engine.dispose()


def test_create_tables_is_idempotent_and_indexes_ride_id_and_time(engine: Engine) -> None:
    store.create_tables(engine)  # the fixture created them already
    indexed = {tuple(ix["column_names"]) for ix in inspect(engine).get_indexes(
        "predictions", schema=engine.get_execution_options().get(
            "schema_translate_map", {}).get(None))}
    assert {("ride_id",), ("logged_at",)} <= indexed


def test_predictions_are_written_and_summarised(engine: Engine) -> None:
    rows = [prediction(i) for i in range(5)]
    rows += [prediction(i, variant="challenger", model_version="4") for i in range(5, 8)]
    assert store.write_predictions(engine, rows) == 8
    assert store.write_predictions(engine, []) == 0
    assert store.prediction_summary(engine) == {
        "total": 8, "by_variant": {"challenger": 3, "champion": 5},
        "by_version": {"3": 5, "4": 3}}


def test_a_failing_batch_writes_nothing(engine: Engine) -> None:
    rows = [prediction(0), prediction(1, prediction=None)]  # NOT NULL violated by the 2nd row
    with pytest.raises(Exception, match="(?i)null"):
        store.write_predictions(engine, rows)
    assert store.prediction_summary(engine)["total"] == 0


def test_prediction_rows_with_unknown_columns_are_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="not columns of the prediction log: colour"):
        store.write_predictions(engine, [prediction(0, colour="green")])


def test_logged_at_defaults_to_now_and_is_stored_as_naive_utc(engine: Engine) -> None:
    aware = dt.datetime(2021, 3, 5, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    before = store.utc_now()
    store.write_predictions(engine, [prediction(0, logged_at=None),
                                     prediction(1, logged_at=aware)])
    frame = store.joined_predictions(engine, labelled_only=False)
    stamps = dict(zip(frame["ride_id"], frame["logged_at"], strict=True))
    assert before <= stamps["r0"].to_pydatetime() <= store.utc_now()
    assert stamps["r1"] == pd.Timestamp("2021-03-05 15:00")


def test_tuple_rows_are_stored_like_mapping_rows(engine: Engine) -> None:
    """The log writer's path (tuples, Unix seconds; the driver's executemany on SQLite) stores
    what ``write_predictions`` stores: the same values, timestamps that read back and compare in
    a window query like the others."""
    at = T0 + dt.timedelta(minutes=1, microseconds=250)
    unix = at.replace(tzinfo=dt.UTC).timestamp()
    mapped = prediction(0, logged_at=at, shadow_version="4", shadow_prediction=9.5)
    tuples = [store.prediction_tuple({**mapped, "ride_id": "t1", "request_id": "req-t1"}),
              store.prediction_tuple({**mapped, "ride_id": "t2", "request_id": "req-t2",
                                      "logged_at": at + dt.timedelta(seconds=1)})]
    tuples[1] = (tuples[1][0], unix + 1.0, *tuples[1][2:])  # Unix seconds instead of datetime
    store.write_predictions(engine, [mapped])
    assert store.write_prediction_tuples(engine, tuples) == 2
    assert store.write_prediction_tuples(engine, []) == 0
    frame = store.joined_predictions(engine, labelled_only=False).set_index("ride_id")
    assert frame.loc["t1", "logged_at"] == frame.loc["r0", "logged_at"] == pd.Timestamp(at)
    assert frame.loc["t2", "logged_at"] == pd.Timestamp(at + dt.timedelta(seconds=1))
    columns = ["PULocationID", "DOLocationID", "trip_distance", "variant", "model_version",
               "prediction", "shadow_version", "shadow_prediction"]
    assert frame.loc["t1", columns].tolist() == frame.loc["r0", columns].tolist()
    window = store.joined_predictions(engine, at, at + dt.timedelta(seconds=1),
                                      labelled_only=False)
    assert sorted(window["ride_id"]) == ["r0", "t1"]  # [since, until): t2 is at `until`


def test_actuals_are_recorded_once(engine: Engine) -> None:
    assert store.record_actuals(engine, [actual(0, 12.0), actual(1, 7.5)]) == 2
    assert store.record_actuals(engine, [actual(1, 7.5), actual(2, 3.0)]) == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(store.actuals)).scalar_one() == 3


def test_joined_predictions_inner_and_outer(engine: Engine) -> None:
    store.write_predictions(engine, [prediction(i) for i in range(4)]
                            + [prediction(9, ride_id=None)])
    store.record_actuals(engine, [actual(1, 12.0), actual(3, 20.0), actual(7, 5.0)])
    labelled = store.joined_predictions(engine)
    assert labelled["ride_id"].tolist() == ["r1", "r3"]
    assert labelled["duration"].tolist() == [12.0, 20.0]
    everything = store.joined_predictions(engine, labelled_only=False)
    assert everything["ride_id"].tolist() == ["r0", "r1", "r2", "r3", None]
    assert everything["duration"].isna().tolist() == [True, False, True, False, True]
    assert everything["prediction"].dtype == "float64"


def test_joined_predictions_window_by_logged_at_or_by_pickup(engine: Engine) -> None:
    store.write_predictions(engine, [prediction(i) for i in range(6)])
    march_1 = dt.datetime(2021, 3, 1, 9, 0)  # replayed trips: picked up days before logging
    store.record_actuals(engine, [actual(i, 10.0, pickup=march_1 + dt.timedelta(hours=i * 10))
                                  for i in range(6)])
    window = store.joined_predictions(engine, T0 + dt.timedelta(minutes=2),
                                      T0 + dt.timedelta(minutes=4))
    assert window["ride_id"].tolist() == ["r2", "r3"]
    day_2 = store.joined_predictions(engine, dt.datetime(2021, 3, 2), dt.datetime(2021, 3, 3),
                                     by="pickup")
    assert day_2["ride_id"].tolist() == ["r2", "r3"]  # picked up 2021-03-02 05:00 and 15:00
    with pytest.raises(BadInputError, match="by='dropoff'"):
        store.joined_predictions(engine, by="dropoff")


def test_metrics_upsert_one_row_per_day_and_metric(engine: Engine) -> None:
    day = dt.date(2021, 3, 5)
    store.write_metrics(engine, day, {"rmse": 8.0, "mae": 5.0, "drift_share": None}, "3")
    store.write_metrics(engine, day, {"rmse": 9.5, "mae": float("nan")}, "4")  # a re-run
    store.write_metrics(engine, dt.date(2021, 3, 6), {"rmse": 7.0}, "4")
    frame = store.read_metrics(engine)
    assert len(frame) == 4
    first = frame[frame["day"] == day].set_index("metric")
    assert first.loc["rmse", "value"] == 9.5 and first.loc["rmse", "model_version"] == "4"
    assert pd.isna(first.loc["mae", "value"]) and pd.isna(first.loc["drift_share", "value"])
    assert store.read_metrics(engine, since=dt.date(2021, 3, 6))["metric"].tolist() == ["rmse"]
    assert len(store.read_metrics(engine, until=day, metrics=["rmse"])) == 1


def test_alerts_are_stored_once_per_day_and_metric(engine: Engine) -> None:
    day = dt.date(2021, 3, 5)
    alert = {"day": day, "metric": "mae_ratio", "value": 1.2, "threshold": 1.12,
             "message": "MAE up"}
    assert [a["metric"] for a in store.write_alerts(engine, [alert])] == ["mae_ratio"]
    again = store.write_alerts(engine, [{**alert, "value": 1.3},
                                        {**alert, "metric": "rmse_ratio"}])
    assert [a["metric"] for a in again] == ["rmse_ratio"]  # only the new one
    frame = store.read_alerts(engine)
    assert frame["metric"].tolist() == ["mae_ratio", "rmse_ratio"]
    assert frame["value"].tolist() == [1.3, 1.2]
    assert store.read_alerts(engine, since=dt.date(2021, 3, 6)).empty
