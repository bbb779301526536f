"""The suite's own harness (tests/conftest.py): Prefect's logging survives a command run in
process, and the session's Prefect server comes back when something kills it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PREFECT_TEST_LOGGING, _ServerKeeper

# Prefect sets its logging up inside a CliRunner (its stream closed afterwards), then logs.
SCRIPT = """
import logging, typer
from typer.testing import CliRunner

app = typer.Typer()

@app.command()
def first_prefect_import() -> None:
    from prefect import flow  # noqa: F401 - sets Prefect's logging up, here

CliRunner().invoke(app, [])
logging.getLogger("prefect").warning("a log after the command")
handlers = [h for h in logging.getLogger().handlers if type(h).__name__ == "PrefectConsoleHandler"]
print("closed" if any(h.stream.closed for h in handlers) else f"open {len(handlers)}")
"""


def _run(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in PREFECT_TEST_LOGGING}
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env={**env, **extra_env}, timeout=120)


def test_prefect_logs_after_an_in_process_command_with_the_test_setting() -> None:
    done = _run(PREFECT_TEST_LOGGING)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "open 1", done.stderr
    assert "Logging error" not in done.stderr and "a log after the command" in done.stderr


def test_without_it_the_console_handler_keeps_the_closed_stream() -> None:
    """What the setting prevents, with Prefect 3.9.1: when this fails, the setting can go."""
    done = _run({})
    assert done.stdout.strip() == "closed", (done.stdout, done.stderr)
    assert "Logging error" in done.stderr


@pytest.mark.slow
def test_a_killed_prefect_server_is_started_again_on_its_port(tmp_path: Path) -> None:
    from level3_training.prefect_server import is_healthy, start_server

    home = tmp_path / "server-home"
    keeper = _ServerKeeper(start_server(home), home, poll_seconds=0.2)
    first, url = keeper.server, keeper.server.api_url
    keeper.start()
    try:
        with pytest.warns(UserWarning, match="return code -9"):
            os.killpg(first.process.pid, signal.SIGKILL)
            deadline = time.monotonic() + 90
            while not (keeper.server is not first and is_healthy(url)):
                assert time.monotonic() < deadline, "the server did not come back"
                time.sleep(0.2)
        assert keeper.restarts == [-9] and keeper.server.api_url == url
    finally:
        keeper.stop()
    assert keeper.server.process.poll() is not None and not is_healthy(url)
