"""Unreachable parts: the MLflow registry, the Prefect API and PostgreSQL, each down for real on
127.0.0.1, and what the workbook does about it.

Covered elsewhere, not repeated here: the registry stopped *while* the level-4 service runs
under traffic (it keeps serving the last good model and ``/health`` names the error):
``tests/level4/test_service_gunicorn.py``; ``level3 train`` with the tracking server or the
Prefect API down (one line, nothing registered, no store made): ``tests/level3/test_bad_input.py``;
a log writer whose SQLite database stays down or comes back: ``tests/level4/test_log_writer.py``.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from taxi_common.local_servers import free_port, http_ok, stop_process_group, wait_until_healthy
from taxi_common.settings import Settings
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
MLOPS_LEVELS = Path(sys.executable).with_name("mlops-levels")
RELOAD = 0.5  # seconds between the service's registry checks


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``mlops-levels`` subprocess: this checkout's code, the settings'
    home, MLflow's retries bounded."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "DATABASE_URL")}
    env.update({"PYTHONPATH": str(REPO_ROOT), "WORKBOOK_HOME": str(settings.workbook_home),
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
                **extra})
    return env


def _poll(check: Callable[[], Any], timeout: float, step: float = 0.25) -> Any:
    """``check()`` until it returns something truthy (returned), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(step)


# --- MLflow down when the level-4 service starts ------------------------------------------------

def test_level4_service_waits_for_a_registry_that_is_down_at_start(tmp_path: Path) -> None:
    """``level4 serve`` with no MLflow server behind its tracking URI: it starts anyway, answers
    503 with a message naming the registry and the retry, and becomes ready on its own once the
    server is up and a champion is promoted."""
    import requests

    from level3_training.mlflow_server import start_mlflow_server
    from tests.level4.conftest import _prepared, fit, register

    mlflow_port = free_port()
    tracking = f"http://127.0.0.1:{mlflow_port}"
    settings = Settings(workbook_home=tmp_path / "workbook", mlflow_tracking_uri=tracking)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "service.log"
    server = service = None
    try:
        with log_path.open("wb") as log:
            service = subprocess.Popen(
                [str(MLOPS_LEVELS), "level4", "serve", "--port", str(port), "--workers", "1",
                 "--reload-interval", str(RELOAD)], stdout=log, stderr=subprocess.STDOUT,
                env=_env(settings, MLFLOW_TRACKING_URI=tracking), start_new_session=True)
        # up, but not ready: /health answers (503) once gunicorn listens
        wait_until_healthy(service, lambda: _answers(f"{url}/health"), what="level4 serve",
                           timeout=120, log_path=log_path)
        health = requests.get(f"{url}/health", timeout=5)
        assert health.status_code == 503, health.text
        body = health.json()
        assert body["status"] == "unavailable"
        assert body["message"].startswith(f"no champion loaded yet: the registry at {tracking} "
                                          "could not be read")
        assert f"retrying every {RELOAD:g} s" in body["message"]
        ride = {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 2.0, "ride_id": "r-1"}
        refused = requests.post(f"{url}/predict", json=ride, timeout=5)
        assert refused.status_code == 503 and refused.json()["error"] == "model_unavailable"

        server = start_mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}",
                                     tmp_path / "artifacts", tmp_path / "mlflow.log",
                                     port=mlflow_port)
        january = _prepared("2021-01", 2000)
        version = register(settings, fit("linear", january), january, alias="champion")
        ready = _poll(lambda: http_ok(f"{url}/health"), timeout=60)
        assert ready, log_path.read_text()[-2000:]
        health = requests.get(f"{url}/health", timeout=5).json()
        assert health["model_version"] == version and health["source"]["last_error"] is None
        served = requests.post(f"{url}/predict", json=ride, timeout=5)
        assert served.status_code == 200 and served.json()["model_version"] == version
    finally:
        if service is not None:
            stop_process_group(service.pid)
        if server is not None:
            server.stop()


def _answers(url: str) -> bool:
    import requests

    try:
        return requests.get(url, timeout=2).status_code in (200, 503)
    except requests.RequestException:
        return False


# --- the Prefect API down ------------------------------------------------------------------------

def test_level5_run_once_with_the_prefect_api_down(tmp_path: Path) -> None:
    """``level5 run --once`` against a closed loopback port: one line naming the Prefect API
    and the fix, exit 2; nothing half-done: no tracking store, no event."""
    from level4_deployment.store import engine_for
    from level5_automation.events import create_events_table, read_events

    settings = Settings(workbook_home=tmp_path / "workbook")
    dead = f"http://127.0.0.1:{free_port()}/api"
    done = subprocess.run([str(MLOPS_LEVELS), "level5", "run", "--once"], capture_output=True,
                          text=True, timeout=120, env=_env(settings, PREFECT_API_URL=dead))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "the Prefect API" in last and dead in last, last
    assert "not reachable" in last and "PREFECT_API_URL" in last, last
    assert not (settings.workbook_home / "mlflow.db").exists()
    engine = engine_for(settings)
    create_events_table(engine)
    assert read_events(engine) == []
    engine.dispose()


# --- PostgreSQL down in the middle of a run (a private cluster, never the machine's own) ---------

@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of this test alone, on a free port of 127.0.0.1."""

    bin_dir: Path
    root: Path
    port: int
    user: str | None  # run as this user (initdb refuses root)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run([str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), *args],
                       check=True, capture_output=True, timeout=60, user=self.user)

    def start(self) -> None:
        self._ctl("-w", "-l", str(self.root / "server.log"), "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self._ctl("-w", "-m", "fast", "stop")

    def running(self) -> bool:
        return (self.root / "data" / "postmaster.pid").exists()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """initdb + pg_ctl in a temporary folder (as ``postgres`` when this runs as root), started;
    stopped and deleted afterwards. Skips with the reason where PostgreSQL is not installed."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    bin_dir = Path(bins[-1]).parent
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="workbook-pg-"))  # /tmp: reachable by that user
    if user:
        shutil.chown(root, user)
    cluster = PrivatePostgres(bin_dir, root, free_port(), user)
    try:
        subprocess.run([str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "postgres",
                        "-A", "trust", "--no-sync", "-E", "UTF8"], check=True,
                       capture_output=True, timeout=120, user=user)
        cluster.start()
        yield cluster
    finally:
        if cluster.running():
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _rows(url: str) -> tuple[int, int]:
    """(rows, distinct request ids) of the prediction log at ``url``."""
    import psycopg2

    with psycopg2.connect(url, connect_timeout=3) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT request_id) FROM predictions")
        return cur.fetchone()


def test_prediction_log_with_postgresql_down_mid_run(
        private_postgres: PrivatePostgres, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The level-4 app and its prediction log on PostgreSQL, which stops mid-run and comes
    back: the service answers every request; each batch that cannot be written is retried,
    then dropped, counted and logged as one ERROR line; ``/health`` says exactly how many rows
    were dropped; nothing is half-written (the log holds exactly the rows of the batches that
    went through); once the database is back the rows served after it are written again, and
    the crash journal's recovery writes the dropped ones: 95 of 95 in the end."""
    from level2_devops.app import close_service, create_app, start_service
    from level2_devops.service.model_source import ModelFileSource
    from level2_devops.training import TrainConfig, train_and_save
    from level4_deployment.log_writer import PredictionLogWriter
    from level4_deployment.serving import APP_CONFIG, PredictionLogSink

    settings = Settings(workbook_home=tmp_path / "workbook",
                        database_url=private_postgres.url)
    model = train_and_save(TrainConfig(n_rows=2000), settings=settings).model_path
    writer = PredictionLogWriter.for_settings(settings, flush_interval=0.1, retry_delay=0.05,
                                              journal=True)
    app = create_app(ModelFileSource(model), APP_CONFIG, sink=PredictionLogSink(writer))
    start_service(app)
    client = app.test_client()

    def serve(first: int, n: int) -> None:
        for i in range(first, first + n):
            answer = client.post("/predict", json={"PULocationID": 74, "DOLocationID": 75,
                                                   "trip_distance": 2.0, "ride_id": f"r{i}"})
            assert answer.status_code == 200, answer.get_json()
        assert writer.flush(timeout=30)

    try:
        serve(0, 40)
        assert _rows(private_postgres.url) == (40, 40)
        private_postgres.stop()
        with caplog.at_level(logging.ERROR, logger="level4_deployment.log_writer"):
            serve(40, 30)  # the service keeps answering
        sink = client.get("/health").get_json()["sink"]
        assert sink["dropped_write_failed"] == sink["dropped"] == 30
        assert sink["written"] == 40 and sink["submitted"] == 70 and sink["queued"] == 0
        messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        errors = [m for m in messages if m.startswith("prediction log: dropped a batch of ")]
        kept = [m for m in messages if m not in errors]
        assert errors and all("after 3 failed writes: " in m for m in errors), messages
        assert kept and all("kept in" in m and "log --recover` writes them" in m
                            for m in kept), messages
        assert sum(int(m.split()[6]) for m in errors) == 30  # each dropped row reported once

        private_postgres.start()
        serve(70, 25)
        sink = client.get("/health").get_json()["sink"]
        assert sink["written"] == 65 and sink["dropped"] == 30 and sink["submitted"] == 95
        assert _rows(private_postgres.url) == (65, 65)  # whole batches only, none twice
        # The dropped batches' rows were kept in the crash journal: `level4 log --recover`
        # writes them now, and nothing is lost.
        from level4_deployment.journal import journal_dir, recover_journals
        from level4_deployment.store import engine_for

        engine = engine_for(settings)
        try:
            reports = recover_journals(engine, journal_dir(settings))
        finally:
            engine.dispose()
        assert sum(r.recovered_rows for r in reports) == 30, reports
        assert _rows(private_postgres.url) == (95, 95)
    finally:
        close_service(app)
    assert writer.stats.written + writer.stats.dropped == writer.stats.submitted == 95
