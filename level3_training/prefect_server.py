"""A local ``prefect server start`` on 127.0.0.1: start, wait until healthy, stop by process group.

Without ``PREFECT_API_URL`` every Python process that runs a flow starts a temporary Prefect
server (11–20 s here). One long-lived server is cheaper when several flows run: the tests start
one per session, and ``mlops-levels level3 server start`` starts one in the background whose URL
``level3 train`` then uses (recorded in ``<PREFECT_HOME>/server.json``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from taxi_common.errors import WorkbookError

STARTUP_TIMEOUT = 120.0
RECORD_NAME = "server.json"


class PrefectServerError(WorkbookError):
    """A Prefect server that would not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """True when ``<api_url>/health`` answers 200."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as resp:  # noqa: S310
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


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

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT/api``."""
        return f"http://127.0.0.1:{self.port}/api"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        stop_process_group(self.process.pid, timeout)
        try:
            self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass


def stop_process_group(pid: int, timeout: float = 20.0) -> None:
    """Stop the process group led by ``pid``: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap our own child, if it is one
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start_server(prefect_home: Path, port: int | None = None,
                 timeout: float = STARTUP_TIMEOUT) -> PrefectServer:
    """Start ``prefect server start`` on 127.0.0.1 and wait until ``/api/health`` answers."""
    prefect_home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = prefect_home / f"server-{port}.log"
    prefect = Path(sys.executable).with_name("prefect")
    command = [str(prefect) if prefect.exists() else "prefect", "server", "start",
               "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env=server_environment(prefect_home), start_new_session=True)
    server = PrefectServer(process, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-300:].replace("\n", " ")
            raise PrefectServerError(f"prefect server exited with code {process.returncode}: "
                                     f"{tail} (log: {log_path})")
        if is_healthy(server.api_url):
            return server
        time.sleep(0.25)
    server.stop()
    raise PrefectServerError(f"prefect server on port {port} was not healthy after {timeout:.0f} s "
                             f"(log: {log_path})")


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
