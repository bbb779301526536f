"""Any ride id the service accepts (1 to 128 characters) can be logged and joined with its
actual, on SQLite and on PostgreSQL (where a VARCHAR is enforced)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

from level2_devops.service.rides import MAX_RIDE_ID_LENGTH
from level4_deployment.store import joined_predictions, record_actuals, write_predictions


def test_longest_accepted_ride_id_is_logged_and_joined(engine: Engine) -> None:
    ride_id = "r" * MAX_RIDE_ID_LENGTH
    now = dt.datetime(2021, 3, 5, 12, 0)
    write_predictions(engine, [{"request_id": "q1", "logged_at": now, "ride_id": ride_id,
                                "PULocationID": 74, "DOLocationID": 75, "trip_distance": 1.5,
                                "variant": "champion", "model_version": "1",
                                "prediction": 9.5}])
    assert record_actuals(engine, [{"ride_id": ride_id, "pickup_datetime": now,
                                    "dropoff_datetime": now + dt.timedelta(minutes=11),
                                    "duration": 11.0}]) == 1
    joined = joined_predictions(engine)
    assert joined["ride_id"].tolist() == [ride_id]
    assert joined["duration"].tolist() == [11.0]


def test_creating_the_tables_from_many_processes_at_once_is_safe(tmp_path) -> None:
    """The gunicorn workers of one service each create the tables when they start; on a new
    database they race (``table … already exists``), which once killed the service at boot."""
    import multiprocessing

    from level4_deployment.store import create_tables, engine_for, prediction_summary
    from taxi_common.settings import Settings

    settings = Settings(workbook_home=tmp_path / "workbook")
    settings.workbook_home.mkdir(parents=True)
    context = multiprocessing.get_context("fork")
    start = context.Barrier(6)
    failures = context.Value("i", 0)

    def create() -> None:
        engine = engine_for(settings)
        start.wait()
        try:
            create_tables(engine)
        except Exception:  # noqa: BLE001 - counted, the test asserts there are none
            with failures.get_lock():
                failures.value += 1

    processes = [context.Process(target=create) for _ in range(6)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=60)
    assert failures.value == 0
    assert prediction_summary(engine_for(settings))["total"] == 0
