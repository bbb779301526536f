"""Local server processes for every level: a free loopback port, waiting for health, stopping.

Level 2 runs gunicorn, level 3 a Prefect server and ``mlops-levels demo`` both; their tests and
benchmarks start the same processes. Each runs in its own process group (``start_new_session``)
so that stopping it also stops the workers it forked.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from taxi_common.errors import WorkbookError


class ServerStartError(WorkbookError):
    """A local server that exited or did not become healthy in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when a GET of ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - local URL
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(log_path: Path | None, chars: int = 300) -> str:
    if log_path is None or not log_path.exists():
        return ""
    return " " + log_path.read_text(errors="replace")[-chars:].replace("\n", " ")


def wait_until_healthy(process: subprocess.Popen, is_healthy: Callable[[], bool], *, what: str,
                       timeout: float = 60.0, log_path: Path | None = None) -> None:
    """Poll ``is_healthy`` until it is true; stop ``process`` and raise if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(f"{what} exited with code {process.returncode}:"
                                   f"{_log_tail(log_path)} (log: {log_path})")
        if is_healthy():
            return
        time.sleep(0.2)
    stop_process_group(process.pid)
    raise ServerStartError(f"{what} was not healthy after {timeout:.0f} s:{_log_tail(log_path)}"
                           f" (log: {log_path})")


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child (so it does not linger as a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _group_alive(pid: int) -> bool:
    """True while any process of the group led by ``pid`` is running."""
    _reap(pid)
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # only zombies left that are not ours to reap
        return False
    return True


def stop_process_group(pid: int, timeout: float = 20.0) -> None:
    """Stop the whole process group led by ``pid`` (the server and every worker it forked):
    SIGTERM, then SIGKILL for whatever is left after ``timeout`` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
