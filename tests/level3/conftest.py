"""Level-3 fixtures: ONE Prefect server for the whole session, and a trained workbook home.

Measured on this machine (2 cores, shared): ``prefect server start`` healthy after 13.3 s,
``prefect_test_harness(server_startup_timeout=120)`` up after 14.5 s (plus 5.3 s importing
prefect first). They cost the same; the subprocess server is the real thing, and CLI subprocesses
can use it too (PREFECT_API_URL), so that is what the tests use.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from level3_training.prefect_server import start_server
from level3_training.runtime import environment_defaults
from taxi_common.settings import Settings

#: Small synthetic training data: a few thousand rows a month, three cheap candidates.
SMALL = {"train_months": ("2021-01",), "val_month": "2021-02", "n_rows": 3000,
         "models": ("linear", "ridge", "random_forest"), "trials": 2, "seed": 0}
MLOPS_LEVELS = Path(sys.executable).with_name("mlops-levels")


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect server on a free port for the session; PREFECT_API_URL points at it, and level 3's
    environment defaults (a client PREFECT_HOME, telemetry off, bounded MLflow retries) are set."""
    home = tmp_path_factory.mktemp("prefect")
    server = start_server(home / "server-home")
    # level 3's own defaults, set here so that run_training's setdefault adds none of them to
    # os.environ for good: all are undone when the session ends
    env = {**environment_defaults(Settings(workbook_home=home)),  # PREFECT_HOME: home/prefect
           "PREFECT_API_URL": server.api_url}
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
    """Send Prefect's queued API logs, so none are sent to a server that has stopped."""
    if "prefect" in sys.modules:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)


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
