"""`mlops-levels level3 server start|status|stop`: a background Prefect server, recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from level3_training.prefect_server import is_healthy, record_path
from taxi_common.local_servers import stop_process_group
from taxi_common.settings import Settings

pytestmark = pytest.mark.slow


def test_server_start_status_stop(settings: Settings, run_cli: Callable[..., Any],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    record = record_path(settings.prefect_home)
    try:
        done = run_cli("level3", "server", "start", settings=settings, timeout=180)
        assert done.returncode == 0, done.stderr
        api_url = json.loads(record.read_text())["api_url"]
        assert api_url.startswith("http://127.0.0.1:") and is_healthy(api_url)
        assert f"PREFECT_API_URL={api_url}" in done.stdout

        again = run_cli("level3", "server", "start", settings=settings)
        assert "already running" in again.stdout
        status = run_cli("level3", "server", "status", settings=settings)
        assert f"running: PREFECT_API_URL={api_url}" in status.stdout

        stopped = run_cli("level3", "server", "stop", settings=settings)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        assert not is_healthy(api_url) and not record.exists()
        assert "not running" in run_cli("level3", "server", "status", settings=settings).stdout
    finally:
        if record.exists():  # the test failed half-way: stop what it started
            stop_process_group(int(json.loads(record.read_text())["pid"]))
