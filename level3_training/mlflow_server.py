"""A local ``mlflow server`` on 127.0.0.1: start it on a store, wait until healthy, stop it.

Team mode runs the tracking server for real (``MLFLOW_TRACKING_URI=http://…``); the tests, the
level-4 service tests and ``mlops-levels ui`` start one with this. The server forks workers, so it
is started in its own process group and stopped by group (STACK.md: healthy after about 8 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from taxi_common.local_servers import free_port, http_ok, stop_process_group, wait_until_healthy

STARTUP_TIMEOUT = 120.0


@dataclass
class MlflowServer:
    """A running ``mlflow server``: its URL, its backend store and its process."""

    url: str
    store_uri: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        """Stop the server and the workers it forked."""
        stop_process_group(self.process.pid)


def start_mlflow_server(store_uri: str, artifacts: Path, log_path: Path, *,
                        port: int | None = None, host: str = "127.0.0.1",
                        timeout: float = STARTUP_TIMEOUT) -> MlflowServer:
    """``mlflow server`` on ``store_uri`` (SQLite or ``postgresql+psycopg2://…``) with its
    artifacts in ``artifacts``, one worker, on ``port`` (default: a free one); returns once
    ``/health`` answers. A server that dies or never gets healthy ends in one line (the log's
    tail included) and is stopped."""
    port = port or free_port(host)
    command = [str(Path(sys.executable).with_name("mlflow")), "server",
               "--backend-store-uri", store_uri, "--artifacts-destination", str(artifacts),
               "--host", host, "--port", str(port), "--workers", "1"]
    # No job execution: it serves GenAI scorers, which the workbook has none of, and costs
    # 8 more processes (huey consumers) and about 1 GB of memory per server (measured).
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    server = MlflowServer(f"http://{host}:{port}", store_uri, process, log_path)
    try:
        wait_until_healthy(process, lambda: http_ok(f"{server.url}/health", timeout=1),
                           what="mlflow server", timeout=timeout, log_path=log_path)
    except BaseException:
        server.stop()
        raise
    return server
