"""Fixtures shared by every test: a private WORKBOOK_HOME, and a local mirror of the real TLC files.

The real files live in ``../shared/data/tlc`` beside the checkout (or wherever ``TLC_TEST_DATA``
points). They are test data only: a local HTTP server on 127.0.0.1 serves them through the loader's
``TLC_BASE_URL`` setting, exactly as a team mirror would. Tests that need them skip with the reason
when the folder is absent.
"""

from __future__ import annotations

import functools
import http.server
import os
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from taxi_common.settings import Settings
from tests.http_helpers import serving
from tests.postgres import postgres_admin_connection

REPO_ROOT = Path(__file__).resolve().parent.parent
TLC_TEST_DATA = Path(os.environ.get("TLC_TEST_DATA", REPO_ROOT.parent / "shared" / "data" / "tlc"))


#: Prefect's console log handler writes to the interpreter's own stderr in the tests. By default
#: it takes ``sys.stderr`` when Prefect first sets its logging up — inside a ``CliRunner.invoke``
#: that is the runner's stream, closed when the command returns, and every later Prefect log of
#: that test process then fails ("I/O operation on closed file"; in a flow run whose prints are
#: logged, a RecursionError: seen in CI on three tests that ran after an in-process command).
#: ``sys.__stderr__`` is fd 2, which pytest still captures.
PREFECT_TEST_LOGGING = {"PREFECT_LOGGING_HANDLERS_CONSOLE_STREAM": "ext://sys.__stderr__"}


def pytest_configure(config: pytest.Config) -> None:
    """Environment every test process needs before it imports Prefect (see above)."""
    for name, value in PREFECT_TEST_LOGGING.items():
        os.environ.setdefault(name, value)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture(scope="session")
def tlc_dir() -> Path:
    """The folder of real TLC files; skips the test when it is absent."""
    if not (TLC_TEST_DATA / "green_tripdata_2021-01.parquet").exists():
        pytest.skip(f"real TLC test files not found in {TLC_TEST_DATA} (set TLC_TEST_DATA)")
    return TLC_TEST_DATA


@pytest.fixture(scope="session")
def tlc_mirror(tlc_dir: Path) -> Iterator[str]:
    """Base URL of an HTTP server on 127.0.0.1 serving the real TLC files; stopped afterwards."""
    handler = functools.partial(_QuietHandler, directory=str(tlc_dir))
    with serving(handler) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a private, empty WORKBOOK_HOME (synthetic data needs nothing else)."""
    return Settings(workbook_home=tmp_path / "workbook")


@pytest.fixture
def tlc_settings(tmp_path: Path, tlc_mirror: str) -> Settings:
    """Settings whose TLC_BASE_URL is the local mirror of the real files."""
    return Settings(workbook_home=tmp_path / "workbook", tlc_base_url=tlc_mirror)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """ONE Prefect server on a free port for the whole session (levels 3 and 4 share it);
    PREFECT_API_URL points at it, and level 3's environment defaults (a client PREFECT_HOME,
    telemetry off, bounded MLflow retries) are set until the session ends.

    Measured on this machine (2 cores, shared): ``prefect server start`` healthy after 13.3 s,
    ``prefect_test_harness(server_startup_timeout=120)`` up after 14.5 s; they cost the same, and
    the subprocess server is the real thing that CLI subprocesses can use too.
    """
    from level3_training.prefect_server import start_server
    from level3_training.runtime import environment_defaults

    home = tmp_path_factory.mktemp("prefect")
    keeper = _ServerKeeper(start_server(home / "server-home"), home / "server-home")
    server = keeper.server
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
        stack.callback(keeper.stop)
        stack.callback(_drain_prefect_logs)  # runs first: send queued logs while the API is up
        keeper.start()
        yield server.api_url


class _ServerKeeper:
    """Watches the session's Prefect server: one that dies under the suite (twice in CI on a
    machine shared with other sessions: gone without a line in its log, so killed from
    outside) is started again on the same port and database, with a warning naming how it
    ended, instead of failing every later test of that worker with ConnectError."""

    def __init__(self, server: Any, home: Path, poll_seconds: float = 1.0) -> None:
        self.server, self.home, self.poll_seconds = server, home, poll_seconds
        self.restarts: list[int | None] = []  # how each dead server ended (its return code)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="prefect-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _watch(self) -> None:
        from level3_training.prefect_server import start_server

        while not self._stopping.wait(self.poll_seconds):
            code = self.server.process.poll()
            if code is None or self._stopping.is_set():
                continue
            self.restarts.append(code)
            warnings.warn(f"the session's Prefect server on port {self.server.port} ended "
                          f"(return code {code}); started again", stacklevel=1)
            self.server = start_server(self.home, self.server.port)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)
        self.server.stop()


def _drain_prefect_logs() -> None:
    """Send Prefect's queued API logs, so none are sent to a server that has stopped."""
    if "prefect" in sys.modules:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A new, empty PostgreSQL schema in database ``test`` (levels 4 and 5's tables go there);
    dropped, with its tables, afterwards. Skips with the reason without PostgreSQL."""
    name = f"test_{uuid.uuid4().hex[:10]}"
    conn = postgres_admin_connection()
    with conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        conn.close()
