"""The level-4 service for real: `mlops-levels level4 serve` (gunicorn, 2 workers) on a real
`mlflow server`; a promotion while traffic flows, then the registry stopped while it flows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from level3_training.mlflow_server import start_mlflow_server
from level3_training.registry import client_for, promote
from level4_deployment.store import engine_for, prediction_summary
from taxi_common.local_servers import free_port, http_ok, stop_process_group, wait_until_healthy
from taxi_common.settings import Settings

pytestmark = pytest.mark.slow
MLOPS_LEVELS = Path(sys.executable).with_name("mlops-levels")
RELOAD = 0.5  # seconds between registry checks of each worker (±20 %)
SLACK = 2.5  # seconds for a check plus the load of a version on a busy 2-core machine


class Traffic(threading.Thread):
    """Single-ride requests with ride ids, one after another, until stopped (bounded)."""

    def __init__(self, url: str, limit: int = 20_000) -> None:
        super().__init__(daemon=True)
        self.url, self.limit = url, limit
        self.results: list[tuple[float, int, str | None]] = []  # (time, status, version)
        self.stop = threading.Event()

    def run(self) -> None:
        import requests

        with requests.Session() as session:
            for i in range(self.limit):
                if self.stop.is_set():
                    break
                ride = {"PULocationID": 74 + i % 50, "DOLocationID": 75, "trip_distance": 2.0,
                        "ride_id": f"ride-{i}"}
                try:
                    r = session.post(f"{self.url}/predict", json=ride, timeout=10)
                    version = r.json().get("model_version") if r.ok else None
                    self.results.append((time.monotonic(), r.status_code, version))
                except requests.RequestException:
                    self.results.append((time.monotonic(), 0, None))


def test_promotion_and_registry_outage_under_traffic(
        tmp_path: Path, registrar: Callable[..., str]) -> None:
    import requests

    server = start_mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts",
                                 tmp_path / "mlflow.log")
    service = None
    try:
        settings = Settings(workbook_home=tmp_path / "workbook", mlflow_tracking_uri=server.url)
        first = registrar(settings, "linear", "champion")
        second = registrar(settings, "ridge", "challenger")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "WORKBOOK_HOME": str(settings.workbook_home),
               "MLFLOW_TRACKING_URI": server.url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
        log_path = tmp_path / "service.log"
        with log_path.open("wb") as log:
            service = subprocess.Popen(
                [str(MLOPS_LEVELS), "level4", "serve", "--port", str(port), "--workers", "2",
                 "--reload-interval", str(RELOAD)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_until_healthy(service, lambda: http_ok(f"{url}/health"), what="level4 serve",
                           timeout=120, log_path=log_path)

        traffic = Traffic(url)
        traffic.start()
        time.sleep(1.5)
        promoting_at = time.monotonic()
        promote(client_for(server.url), second, reason="test")
        promoted_at = time.monotonic()
        time.sleep(RELOAD * 1.2 + SLACK + 1.0)
        server.stop()  # the registry goes away while traffic flows
        stopped_at = time.monotonic()
        time.sleep(3 * RELOAD + 2.0)
        health = requests.get(f"{url}/health", timeout=5).json()
        traffic.stop.set()
        traffic.join(timeout=30)

        statuses = [status for _, status, _ in traffic.results]
        assert len(statuses) > 100 and set(statuses) == {200}, log_path.read_text()[-2000:]
        late = [v for t, _, v in traffic.results if t > promoted_at + RELOAD * 1.2 + SLACK]
        assert late and set(late) == {second}
        assert {v for t, _, v in traffic.results if t < promoting_at} == {first}
        assert any(t > stopped_at + 1.0 for t, _, _ in traffic.results)  # served while down
        assert health["status"] == "ok" and health["model_version"] == second
        assert health["source"]["last_error"]  # and says that the registry is down

        service.send_signal(signal.SIGTERM)  # graceful: each worker flushes its log writer
        service.wait(timeout=60)
        service = None
        summary = prediction_summary(engine_for(settings))
        assert summary["total"] == len(statuses)  # logged == served
        assert set(summary["by_version"]) == {first, second}
    finally:
        if service is not None:
            stop_process_group(service.pid)
        server.stop()
