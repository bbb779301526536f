"""A local ``prefect server start`` on 127.0.0.1: start, wait until healthy, stop by process group.

Without ``PREFECT_API_URL`` every Python process that runs a flow starts a temporary Prefect
server (11–20 s here). One long-lived server is cheaper when several flows run: the tests start
one per session, and ``mlops-levels level3 server start`` starts one in the background whose URL
``level3 train`` then uses (recorded in ``<PREFECT_HOME>/server.json``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from taxi_common.errors import WorkbookError
from taxi_common.local_servers import (
    ServerStartError,
    free_port,
    http_ok,
    stop_process_group,
    wait_until_healthy,
)

STARTUP_TIMEOUT = 120.0
RECORD_NAME = "server.json"


class PrefectServerError(WorkbookError):
    """A Prefect server that would not start."""


def is_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """True when ``<api_url>/health`` answers 200."""
    return http_ok(f"{api_url.rstrip('/')}/health", timeout)


def server_environment(prefect_home: Path) -> dict[str, str]:
    """The environment of a server process: its own PREFECT_HOME, no analytics, no API URL."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update({"PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_ENABLED": env.get("PREFECT_UI_ENABLED", "true"),
                "DO_NOT_TRACK": "true"})
    return env


@dataclass
class PrefectServer:
    """A running ``prefect server start`` process (its own process group)."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    host: str = "127.0.0.1"

    @property
    def api_url(self) -> str:
        """``http://HOST:PORT/api`` (HOST is 127.0.0.1 unless told otherwise)."""
        return f"http://{self.host}:{self.port}/api"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        stop_process_group(self.process.pid, timeout)
        try:
            self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass


def start_server(prefect_home: Path, port: int | None = None,
                 timeout: float = STARTUP_TIMEOUT, *, host: str = "127.0.0.1") -> PrefectServer:
    """Start ``prefect server start`` on ``host`` (127.0.0.1 by default) and wait until
    ``/api/health`` answers."""
    prefect_home.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    log_path = prefect_home / f"server-{port}.log"
    prefect = Path(sys.executable).with_name("prefect")
    command = [str(prefect) if prefect.exists() else "prefect", "server", "start",
               "--host", host, "--port", str(port)]
    # the UI's own API address comes from these settings, not from --host/--port: without
    # them its pages ask http://127.0.0.1:4200/api and show "Can't connect to Server API"
    env = {**server_environment(prefect_home), "PREFECT_SERVER_API_HOST": host,
           "PREFECT_SERVER_API_PORT": str(port)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    server = PrefectServer(process, port, log_path, host)
    try:
        wait_until_healthy(process, lambda: is_healthy(server.api_url), what="prefect server",
                           timeout=timeout, log_path=log_path)
    except ServerStartError as exc:
        raise PrefectServerError(str(exc)) from None
    return server


@contextmanager
def running_server(prefect_home: Path, port: int | None = None) -> Iterator[PrefectServer]:
    """A Prefect server for the duration of the ``with`` block."""
    server = start_server(prefect_home, port)
    try:
        yield server
    finally:
        server.stop()


def record_path(prefect_home: Path) -> Path:
    """Where a background server started by the CLI is recorded."""
    return prefect_home / RECORD_NAME


def write_record(server: PrefectServer, prefect_home: Path) -> None:
    """Record a background server's pid and URL."""
    record_path(prefect_home).write_text(json.dumps({"pid": server.process.pid,
                                                     "api_url": server.api_url}))


def recorded_server(prefect_home: Path) -> dict[str, object] | None:
    """The recorded background server if it still answers, else None (stale records removed)."""
    path = record_path(prefect_home)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    if record.get("api_url") and is_healthy(str(record["api_url"])):
        return record
    path.unlink(missing_ok=True)
    return None
