"""Level-4 fixtures: the shared tables on SQLite and on PostgreSQL, and real
scikit-learn pipelines logged and registered in a real MLflow store.

The level-3 flow is what registers versions in a user's workbook; here versions are logged
directly (level 3's own ``log_pipeline_model`` and ``register_version``), so a test can register a
deliberately bad model (one that predicts the training mean) beside a good one, in seconds.

PostgreSQL runs on 127.0.0.1:5432 (trust auth, database ``test``) on the development and CI
machines; each test gets a private schema, dropped afterwards. Without PostgreSQL those tests
skip with the reason; the SQLite path always runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine

from taxi_common.prepare import FEATURE_COLUMNS, TARGET
from taxi_common.settings import Settings

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"  # bare: engine_for maps it to psycopg2


def _sqlite_engine(tmp_path: Path) -> Engine:
    from level4_deployment.store import create_tables, engine_for

    engine = engine_for(Settings(workbook_home=tmp_path / "workbook"))
    create_tables(engine)
    return engine


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The shared tables, created empty: on SQLite under a tmp WORKBOOK_HOME, or on PostgreSQL
    in a private schema."""
    from level4_deployment.store import create_tables, engine_for

    if request.param == "sqlite":
        engine = _sqlite_engine(tmp_path)
    else:
        schema = request.getfixturevalue("pg_schema")
        settings = Settings(workbook_home=tmp_path / "workbook", database_url=PG_URL)
        engine = engine_for(settings, schema=schema)
        create_tables(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """The shared tables on SQLite only (tests that need a file they can break)."""
    engine = _sqlite_engine(tmp_path)
    try:
        yield engine
    finally:
        engine.dispose()


#: The lineage tags a level-3 version carries (what ``deploy`` reads to pick its holdout).
TAGS = {"data.source": "synthetic", "data.color": "green", "data.train_months": "2021-01",
        "data.val_month": "2021-02", "data.seed": "0", "data.scenario": "baseline",
        "data.n_rows_cap": "4000"}


def _prepared(month: str, rows: int) -> pd.DataFrame:
    from taxi_common.data import load_trips
    from taxi_common.prepare import prepare_trips

    settings = Settings(workbook_home=Path("/nonexistent-not-used"))
    return prepare_trips(load_trips(month, settings=settings, n_rows=rows), "green")


@pytest.fixture(scope="session")
def january() -> pd.DataFrame:
    """4,000 prepared synthetic trips of 2021-01 (the training month of these tests)."""
    return _prepared("2021-01", 4000)


def fit(kind: str, train: pd.DataFrame) -> Any:
    """A fitted pipeline: ``linear`` (the level-2 recipe), ``ridge``, or ``mean`` (a deliberately
    bad model that predicts the training mean)."""
    from sklearn.dummy import DummyRegressor
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.pipeline import Pipeline

    from taxi_common.features import TripFeaturizer

    regressor = {"linear": LinearRegression(), "ridge": Ridge(alpha=1.0),
                 "mean": DummyRegressor(strategy="mean")}[kind]
    pipeline = Pipeline([("featurize", TripFeaturizer()), ("regress", regressor)])
    return pipeline.fit(train[list(FEATURE_COLUMNS)], train[TARGET])


@pytest.fixture(scope="session")
def pipelines(january: pd.DataFrame) -> dict[str, Any]:
    """One fitted pipeline of each kind, fitted once per session."""
    return {kind: fit(kind, january) for kind in ("linear", "ridge", "mean")}


def register(settings: Settings, pipeline: Any, train: pd.DataFrame, *, alias: str,
             tags: dict[str, str] | None = None) -> str:
    """Log ``pipeline`` to the settings' tracking store and register it with ``alias``."""
    from level3_training.registry import client_for, register_version
    from level3_training.tracking import (
        configure_tracking,
        log_pipeline_model,
        model_input_example,
        start_run,
    )

    client = client_for(settings.tracking_uri)
    run_id = start_run(client, configure_tracking(settings), f"level4 test {alias}")
    logged = log_pipeline_model(client, run_id, pipeline, model_input_example(train))
    client.set_terminated(run_id, "FINISHED")
    version = register_version(client, logged.model_id, run_id,
                               description="level-4 test model",
                               tags={**TAGS, **(tags or {})}, alias=alias)
    return str(version.version)


@pytest.fixture
def registrar(january: pd.DataFrame, pipelines: dict[str, Any]
              ) -> Callable[..., str]:
    """``registrar(settings, kind, alias)``: register a pipeline of ``kind`` as ``alias``."""
    def _register(settings: Settings, kind: str, alias: str) -> str:
        return register(settings, pipelines[kind], january, alias=alias)

    return _register
