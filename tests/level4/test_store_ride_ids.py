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


def _create_after(settings: object, start: object, failures: object) -> None:
    """In a child process: wait for the others, then create the tables; report any error."""
    from level4_deployment.store import create_tables, engine_for

    engine = engine_for(settings)
    start.wait()
    try:
        create_tables(engine)
    except Exception as exc:  # noqa: BLE001 - reported, the test asserts there are none
        failures.put(repr(exc)[:300])


def test_creating_the_tables_from_many_processes_at_once_is_safe(tmp_path) -> None:
    """The gunicorn workers of one service each create the tables when they start; on a new
    database they race (``table … already exists``, ``database is locked``), which once killed
    the service at boot."""
    import multiprocessing

    from level4_deployment.store import engine_for, prediction_summary
    from taxi_common.settings import Settings

    context = multiprocessing.get_context("fork")
    for round_ in range(5):  # a race: several rounds, each on a new database
        settings = Settings(workbook_home=tmp_path / f"workbook-{round_}")
        settings.workbook_home.mkdir(parents=True)
        start, failures = context.Barrier(6), context.Queue()
        processes = [context.Process(target=_create_after, args=(settings, start, failures))
                     for _ in range(6)]
        for p in processes:
            p.start()
        for p in processes:
            p.join(timeout=60)
        errors = [failures.get() for _ in range(failures.qsize())]
        assert errors == []
        assert prediction_summary(engine_for(settings))["total"] == 0
