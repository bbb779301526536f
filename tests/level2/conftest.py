"""Fixtures of level 2's tests: small hand-made trips in the green TLC layout.

Hand-made trips let the training functions be tested exactly (known durations, known zones)
without depending on any data source.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taxi_common.prepare import prepare_trips


def make_raw_trips(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """``n`` green-layout trips: 5 pickup and 5 drop-off zones, durations of 0.5 to 70 minutes
    (so the 1-60 minute filter drops some), a duration that grows with the distance."""
    rng = np.random.default_rng(seed)
    pickup = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 30 * 24 * 3600, n),
                                                          unit="s")
    distance = rng.uniform(0.2, 12.0, n).round(2)
    minutes = 2.0 + 3.5 * distance + rng.normal(0, 2.0, n)
    minutes[:: max(n // 20, 1)] = rng.choice([0.5, 70.0], len(minutes[:: max(n // 20, 1)]))
    return pd.DataFrame({
        "VendorID": rng.integers(1, 3, n),
        "lpep_pickup_datetime": pickup.astype("datetime64[us]"),
        "lpep_dropoff_datetime": (pickup + pd.to_timedelta(minutes, unit="m")).astype(
            "datetime64[us]"),
        "PULocationID": rng.choice([41, 74, 75, 166, 244], n),
        "DOLocationID": rng.choice([41, 42, 74, 75, 236], n),
        "trip_distance": distance,
    })


@pytest.fixture
def raw_trips() -> pd.DataFrame:
    """400 hand-made raw trips (seed 0)."""
    return make_raw_trips(400, seed=0)


@pytest.fixture
def prepared_trips(raw_trips: pd.DataFrame) -> pd.DataFrame:
    """The same trips through the classic preparation (duration, 1-60 filter, zone categories)."""
    return prepare_trips(raw_trips, "green")


@pytest.fixture
def other_prepared_trips() -> pd.DataFrame:
    """300 other prepared trips (seed 1), for validation."""
    return prepare_trips(make_raw_trips(300, seed=1), "green")


@pytest.fixture
def make_trips():
    """The :func:`make_raw_trips` factory, for tests that need several sets of trips."""
    return make_raw_trips


# --- The web service's fixtures: a small fitted model file, the app and its test client. ---

@pytest.fixture(scope="session")
def service_trips(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """3,000 prepared synthetic trips of 2021-01 (through the project's data entry point)."""
    from level2_devops.training import load_prepared_month
    from taxi_common.settings import Settings

    home = tmp_path_factory.mktemp("service-data")
    return load_prepared_month("2021-01", settings=Settings(workbook_home=home), n_rows=3000)


@pytest.fixture(scope="session")
def linear_model_file(tmp_path_factory: pytest.TempPathFactory, service_trips: pd.DataFrame):
    """A linear model fitted on ``service_trips``, saved by the model store as version v1."""
    from level2_devops.model_store import save_model
    from level2_devops.training import fit_model

    models = tmp_path_factory.mktemp("service-models")
    return save_model(fit_model("linear", service_trips), {"model": "linear"}, models)


@pytest.fixture
def service_app(linear_model_file):
    """The service app on ``linear_model_file`` (flaskr's ``app`` fixture), started as a
    gunicorn worker starts it, and closed afterwards."""
    from level2_devops.app import close_service, create_app, start_service
    from level2_devops.service.model_source import ModelFileSource

    app = create_app(ModelFileSource(linear_model_file), {"TESTING": True})
    start_service(app)
    yield app
    close_service(app)


@pytest.fixture
def client(service_app):
    """A Flask test client of ``service_app``."""
    return service_app.test_client()
