"""Level-5 fixtures: the events table on SQLite and PostgreSQL, the CLI in process, and
simulations of the real parts (the level-4 service in-process, SQLite tables, an MLflow SQLite
store, Evidently) in private folders.

A simulation copies an empty MLflow store instead of creating MLflow's tables (5-10 s here):
the session makes it once (``mlflow_cache``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from taxi_common.settings import Settings

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The events table (and level 4's tables), created empty: SQLite under a tmp
    WORKBOOK_HOME, or PostgreSQL in a private schema."""
    from level4_deployment.store import create_tables, engine_for
    from level5_automation.events import create_events_table

    if request.param == "sqlite":
        engine = engine_for(Settings(workbook_home=tmp_path / "workbook"))
    else:
        schema = request.getfixturevalue("pg_schema")
        engine = engine_for(Settings(workbook_home=tmp_path / "workbook", database_url=PG_URL),
                            schema=schema)
    create_tables(engine)
    create_events_table(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., Any]:
    """``cli(*args)``: ``mlops-levels level5 …`` in process, WORKBOOK_HOME a tmp folder."""
    from level5_automation.cli import app

    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
        return runner.invoke(app, list(args), env={
            "WORKBOOK_HOME": str(tmp_path / "workbook"), "DATABASE_URL": "",
            "MLFLOW_TRACKING_URI": "", "PREFECT_API_URL": "", **(env or {})})
    return invoke


@pytest.fixture(scope="session")
def mlflow_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the empty MLflow store of the simulations is made, once per session."""
    return tmp_path_factory.mktemp("mlflow-cache")


@pytest.fixture(autouse=True)
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's evaluation logs INFO lines and a SHAP warning per model scored."""
    logger = logging.getLogger("mlflow")
    saved = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(saved)


def policy_with(**sections: dict[str, Any]) -> Any:
    """The shipped policy with some keys of some sections changed."""
    import msgspec

    from level5_automation.policy import Policy, parse_policy

    data = msgspec.to_builtins(Policy())
    for section, keys in sections.items():
        data[section].update(keys)
    return parse_policy(data, "test")


def run_simulation(home: Path, cache: Path, policy: Any = None, **config: Any) -> Any:
    """A whole simulation in ``home`` with the shipped policy (or ``policy``); its result."""
    from level5_automation.policy import load_policy
    from level5_automation.simulation import SimulationConfig, simulate

    return simulate(SimulationConfig(**config), policy or load_policy(), home, cache_dir=cache,
                    base_settings=Settings(workbook_home=home.parent))


def day(text: str) -> dt.date:
    """``"2021-01-05"`` -> a date."""
    return dt.date.fromisoformat(text)
