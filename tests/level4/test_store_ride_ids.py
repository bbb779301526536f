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
