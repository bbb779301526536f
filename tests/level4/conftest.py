"""Level-4 fixtures: the shared tables on SQLite and on PostgreSQL, and a Prefect server.

PostgreSQL runs on 127.0.0.1:5432 (trust auth, database ``test``) on the development and CI
machines; each test gets a private schema, dropped afterwards. Without PostgreSQL those tests
skip with the reason; the SQLite path always runs.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from taxi_common.settings import Settings

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"  # bare: engine_for maps it to psycopg2
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


def _admin_connection() -> Any:
    import psycopg2

    try:
        conn = psycopg2.connect(**PG, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not running on 127.0.0.1:5432 ({str(exc).strip()})")
    conn.autocommit = True
    return conn


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A new, empty PostgreSQL schema in database ``test``; dropped (with its tables) after."""
    name = f"l4_test_{uuid.uuid4().hex[:10]}"
    conn = _admin_connection()
    with conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        conn.close()


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


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect server on a free port for the session (level 3's server helper), with
    PREFECT_API_URL and level 3's environment defaults set until the session ends."""
    from level3_training.prefect_server import start_server
    from level3_training.runtime import environment_defaults

    home = tmp_path_factory.mktemp("prefect")
    server = start_server(home / "server-home")
    env = {**environment_defaults(Settings(workbook_home=home)), "PREFECT_API_URL": server.api_url}
    with ExitStack() as stack:
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        for name, value in env.items():
            patch.setenv(name, value)
        if "prefect" in sys.modules:  # imported earlier: its settings snapshot needs the URL too
            from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

            stack.enter_context(temporary_settings(
                updates={PREFECT_API_URL: server.api_url, PREFECT_HOME: env["PREFECT_HOME"]}))
        stack.callback(server.stop)
        stack.callback(_drain_prefect_logs)  # runs first: send queued logs while the API is up
        yield server.api_url


def _drain_prefect_logs() -> None:
    if "prefect" in sys.modules:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
