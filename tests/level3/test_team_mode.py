"""Team mode for real: `mlflow server` on a fresh PostgreSQL database plus the Prefect server.

The same flow runs, chosen by settings alone (MLFLOW_TRACKING_URI=http://…, PREFECT_API_URL);
the run and the registered version are read back through the tracking server.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from level3_training.mlflow_server import start_mlflow_server
from level3_training.registry import MODEL_NAME, alias_version, client_for
from level3_training.tracking import tracking_uri_scope
from taxi_common.settings import Settings
from tests.postgres import postgres_admin_connection

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database; its SQLAlchemy URI. Dropped afterwards."""
    name = f"mlops_l3_{uuid.uuid4().hex[:10]}"
    conn = postgres_admin_connection()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        # +psycopg2: SQLAlchemy 2.1's bare postgresql:// means psycopg 3, which is not installed
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture
def mlflow_server(fresh_database: str, tmp_path: Path) -> Iterator[str]:
    """`mlflow server` on a free port with the fresh database and a tmp artifact folder."""
    server = start_mlflow_server(fresh_database, tmp_path / "server-artifacts",
                                 tmp_path / "mlflow-server.log")
    try:
        yield server.url
    finally:
        server.stop()


def test_flow_against_mlflow_server_on_postgres_and_prefect_server(
        mlflow_server: str, prefect_api: str, tmp_path: Path,
        train_small: Callable[..., dict[str, Any]], run_cli: Callable[..., Any]) -> None:
    import mlflow

    settings = Settings(workbook_home=tmp_path / "workbook", mlflow_tracking_uri=mlflow_server,
                        prefect_api_url=prefect_api)
    summary = train_small(settings, models=("linear", "ridge"))
    assert summary["version"] == "1"

    client = client_for(mlflow_server)  # everything below is read back through the server
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["data.train_months"] == "2021-01"
    assert parent.data.tags["data.train_fingerprint"] == summary["data"]["train_fingerprint"]
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.tags["model.name"] for r in children) == ["linear", "ridge"]
    assert alias_version(client, "challenger") == "1"
    version = client.get_model_version(MODEL_NAME, "1")
    assert "2021-01" in version.description

    with tracking_uri_scope(mlflow_server):
        model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}@challenger")
    assert model.predict(summary_example()).shape == (2,)
    assert any((tmp_path / "server-artifacts").rglob("MLmodel")), "artifacts not on the server"
    assert not (settings.workbook_home / "mlflow.db").exists()

    done = run_cli("level3", "lineage", "1", settings=settings)
    assert done.returncode == 0, done.stderr
    assert f"data.train_fingerprint: {summary['data']['train_fingerprint']}" in done.stdout


def summary_example() -> Any:
    """Two raw trips."""
    import pandas as pd

    return pd.DataFrame({"PULocationID": [74, 75], "DOLocationID": [75, 74],
                         "trip_distance": [1.2, 3.4]})
