"""Level-3 fixtures: a trained workbook home, and the flow on small data (the session's one
Prefect server, ``prefect_api``, is in ``tests/conftest.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taxi_common.settings import Settings

#: Small synthetic training data: a few thousand rows a month, three cheap candidates.
SMALL = {"train_months": ("2021-01",), "val_month": "2021-02", "n_rows": 3000,
         "models": ("linear", "ridge", "random_forest"), "trials": 2, "seed": 0}
MLOPS_LEVELS = Path(sys.executable).with_name("mlops-levels")


def _train_small(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Run the level-3 flow on small synthetic data with ``overrides`` of :data:`SMALL`."""
    from level3_training.pipeline import TrainConfig, run_training

    return run_training(TrainConfig(**{**SMALL, **overrides}), settings)


@pytest.fixture
def train_small(prefect_api: str) -> Callable[..., dict[str, Any]]:
    """``train_small(settings, **overrides)``: the flow on small synthetic data."""
    return _train_small


@pytest.fixture(scope="module")
def trained(prefect_api: str, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Settings, dict[str, Any]]:
    """A workbook home in which the flow has run once on small synthetic data."""
    settings = Settings(workbook_home=tmp_path_factory.mktemp("trained") / "workbook")
    return settings, _train_small(settings)


def _run_cli(*args: str, settings: Settings, extra_env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``mlops-levels ARGS`` in a subprocess, WORKBOOK_HOME and TLC_BASE_URL from ``settings``."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"WORKBOOK_HOME": str(settings.workbook_home),
                "TLC_BASE_URL": settings.tlc_base_url})
    if settings.mlflow_tracking_uri:
        env["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    env.update(extra_env or {})
    return subprocess.run([str(MLOPS_LEVELS), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _registered_versions(settings: Settings) -> list[str]:
    """Versions of taxi-duration in the settings' registry (none when no store exists yet)."""
    from level3_training.registry import client_for, list_versions

    db = settings.workbook_home / "mlflow.db"
    if not settings.mlflow_tracking_uri and not db.exists():
        return []
    return [row["version"] for row in list_versions(client_for(settings.tracking_uri))]


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli(*args, settings=..., extra_env=...)``: the ``mlops-levels`` command."""
    return _run_cli


@pytest.fixture
def registered_versions() -> Callable[[Settings], list[str]]:
    """``registered_versions(settings)``: versions of taxi-duration in that registry."""
    return _registered_versions


@pytest.fixture
def decoy_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """MLflow's *global* tracking URI pointed at a SQLite file that nothing should touch; the
    file's path. The environment keeps no MLFLOW_TRACKING_URI (``set_tracking_uri`` exports
    one), so settings still choose the store; the global URI is unset afterwards."""
    import mlflow

    decoy = tmp_path / "decoy-global-mlflow.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # restored to absent afterwards
    mlflow.set_tracking_uri(f"sqlite:///{decoy}")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield decoy
    finally:
        mlflow.set_tracking_uri(None)
