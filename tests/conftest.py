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
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from taxi_common.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
TLC_TEST_DATA = Path(os.environ.get("TLC_TEST_DATA", REPO_ROOT.parent / "shared" / "data" / "tlc"))


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
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a private, empty WORKBOOK_HOME (synthetic data needs nothing else)."""
    return Settings(workbook_home=tmp_path / "workbook")


@pytest.fixture
def tlc_settings(tmp_path: Path, tlc_mirror: str) -> Settings:
    """Settings whose TLC_BASE_URL is the local mirror of the real files."""
    return Settings(workbook_home=tmp_path / "workbook", tlc_base_url=tlc_mirror)
