"""The test processes' Prefect logging survives a command run in process (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import PREFECT_TEST_LOGGING

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
