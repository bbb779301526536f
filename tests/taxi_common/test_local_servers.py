"""Local server processes: a free port, waiting for health, stopping a whole process group."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from taxi_common.local_servers import (
    ServerStartError,
    free_port,
    http_ok,
    stop_process_group,
    wait_until_healthy,
)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def start_group(script: str, *args: str) -> subprocess.Popen:
    """A Python process leading its own process group."""
    return subprocess.Popen([sys.executable, "-c", script, *args], start_new_session=True)


FORKS_A_CHILD = (  # writes its child's pid to argv[1] once the child runs
    "import pathlib, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "pathlib.Path(sys.argv[1]).write_text(str(child.pid))\n"
    "time.sleep(60)\n"
)
IGNORES_SIGTERM = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
    "time.sleep(60)\n"
)


def test_stop_process_group_stops_the_leader_and_its_children(tmp_path) -> None:
    child_pid_file = tmp_path / "child.pid"
    process = start_group(FORKS_A_CHILD, str(child_pid_file))
    try:
        wait_until_healthy(process, child_pid_file.exists, what="forking sleeper", timeout=20)
        child = int(child_pid_file.read_text())
        stop_process_group(process.pid, timeout=10)
        assert not group_alive(process.pid)
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, 9)


def test_a_group_that_ignores_sigterm_is_killed_after_the_timeout() -> None:
    process = start_group(IGNORES_SIGTERM)
    try:
        stop_process_group(process.pid, timeout=1.0)
        assert not group_alive(process.pid)
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, 9)


def test_stopping_a_finished_group_is_a_no_op() -> None:
    process = start_group("pass")
    process.wait(timeout=10)
    stop_process_group(process.pid, timeout=1)


def test_wait_until_healthy_reports_an_exited_server_with_its_log(tmp_path) -> None:
    log = tmp_path / "server.log"
    log.write_text("address already in use\n")
    process = start_group("raise SystemExit(3)")
    with pytest.raises(ServerStartError, match="exited with code 3.*address already in use"):
        wait_until_healthy(process, lambda: False, what="toy server", timeout=10, log_path=log)


def test_wait_until_healthy_times_out_and_stops_the_server() -> None:
    process = start_group("import time; time.sleep(60)")
    with pytest.raises(ServerStartError, match="not healthy after 1 s"):
        wait_until_healthy(process, lambda: False, what="toy server", timeout=1)
    assert not group_alive(process.pid)


def test_free_port_is_bindable_and_http_ok_is_false_when_nothing_listens() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert not http_ok(f"http://127.0.0.1:{port}/health", timeout=1)
