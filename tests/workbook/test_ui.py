"""`mlops-levels ui`: the three UIs over one WORKBOOK_HOME, seen in headless Chromium, then gone.

The home holds a registered model (``taxi-duration`` v1 @champion, logged with level 3's own
functions, as level 4's tests do: a few seconds). The command runs as a real subprocess on free
ports; each UI's page is opened in Debian's Chromium (skipped with the reason where it cannot
be) and must show this home's things: the model in MLflow's registry, a flow run in Prefect's
run list, the monitoring project in Evidently's. Screenshots are kept in
``test-artifacts/screenshots/ui-*.png``. Then SIGINT: every process the command started is gone
and every port is free.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taxi_common.local_servers import free_port, wait_until_healthy
from taxi_common.settings import Settings
from tests.browser import chromium_path, open_page, screenshot_path
from tests.sockets import listening_addresses

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_NAME = "ui-test-run"


def _ui_env(settings: Settings) -> dict[str, str]:
    """The command's environment: this home, the embedded stores, the worktree's packages."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME"}}
    env.update({"WORKBOOK_HOME": str(settings.workbook_home), "PYTHONPATH": str(REPO_ROOT)})
    return env


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "workbook.cli", "ui", *args]


def _ports() -> dict[str, int]:
    return {"--mlflow-port": free_port(), "--prefect-port": free_port(),
            "--evidently-port": free_port()}


def _port_args(ports: dict[str, int]) -> list[str]:
    return [str(x) for option, port in ports.items() for x in (option, port)]


def _descendants(pid: int) -> list[Any]:
    import psutil

    return psutil.Process(pid).children(recursive=True)


def _alive(processes: list[Any]) -> list[str]:
    import psutil

    alive = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
        except psutil.NoSuchProcess:
            pass
    return alive


def _processes_mentioning(text: str) -> list[str]:
    """Running processes whose command line mentions ``text`` (a home's path)."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if text in cmdline and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(f"{p.info['pid']} {cmdline[:80]}")
    return found


@pytest.fixture
def home(settings: Settings) -> Settings:
    """A home with ``taxi-duration`` v1 registered as champion."""
    from taxi_common.data import load_trips
    from taxi_common.prepare import prepare_trips
    from tests.level4.conftest import fit, register

    train = prepare_trips(load_trips("2021-01", settings=settings, n_rows=2000), "green")
    assert register(settings, fit("linear", train), train, alias="champion") == "1"
    return settings


@pytest.fixture
def running_ui(home: Settings) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str], Path]]:
    """``mlops-levels ui`` on free ports, up: its process, the printed URLs, its output file."""
    chromium_path()  # skip before starting anything when no browser can look
    out = home.workbook_home / "ui-command.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as log:
        process = subprocess.Popen(_command(*_port_args(_ports())), stdout=log,
                                   stderr=subprocess.STDOUT, env=_ui_env(home), cwd=REPO_ROOT)
    try:
        wait_until_healthy(process, lambda: "Ctrl-C stops them." in out.read_text(),
                           what="mlops-levels ui", timeout=150, log_path=out)
        urls = {line.split()[0]: line.split()[1] for line in out.read_text().splitlines()
                if line.split()[:1] in (["MLflow"], ["Prefect"], ["Evidently"])}
        yield process, urls, out
    finally:
        if process.poll() is None:
            for child in _descendants(process.pid):  # a failed test must not leave them
                child.kill()
            process.kill()
        process.wait(timeout=30)


def _post(url: str, body: dict[str, Any], attempts: int = 6) -> Any:
    """POST JSON; a 503 is retried, as Prefect's own client does (its server answers 503 while
    its SQLite database is locked by its background services, seen once in CI)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(0.5 * 2 ** attempt)


@pytest.mark.slow
def test_ui_shows_the_three_uis_of_the_home_and_stops_them_all(
        running_ui: tuple[subprocess.Popen[bytes], dict[str, str], Path], home: Settings) -> None:
    process, urls, out = running_ui
    assert sorted(urls) == ["Evidently", "MLflow", "Prefect"], out.read_text()
    ports = {name: int(url.rsplit(":", 1)[1]) for name, url in urls.items()}
    for name, port in ports.items():
        assert listening_addresses(port) == {"127.0.0.1"}, name

    # a flow run in the Prefect server the command started (its database is the home's)
    flow = _post(f"{urls['Prefect']}/api/flows/", {"name": "ui-test-flow"})
    _post(f"{urls['Prefect']}/api/flow_runs/",
          {"flow_id": flow["id"], "name": RUN_NAME,
           "state": {"type": "COMPLETED", "name": "Completed"}})

    pages = {
        "MLflow": (f"{urls['MLflow']}/#/models/taxi-duration", "text=Version 1",
                   ["taxi-duration", "champion"]),
        "Prefect": (f"{urls['Prefect']}/runs", f"text={RUN_NAME}", [RUN_NAME, "ui-test-flow"]),
        "Evidently": (urls["Evidently"], "text=taxi-duration monitoring",
                      ["Project List", "taxi-duration monitoring"]),
    }
    for name, (url, selector, texts) in pages.items():
        shot = screenshot_path(f"ui-{name.lower()}")
        check = open_page(url, shot, wait_for=selector,
                          wait_until="load" if name == "MLflow" else "networkidle")
        assert check.page_errors == [], (name, check.page_errors)
        for text in texts:
            assert text in check.text, (name, text, check.text[:500])
        assert shot.stat().st_size > 10_000, name  # a rendered page, not a blank one

    children = _descendants(process.pid)
    assert len(children) >= 3
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0, out.read_text()
    assert "stopped." in out.read_text()
    assert _alive(children) == []
    assert _processes_mentioning(str(home.workbook_home)) == []
    for name, port in ports.items():
        assert listening_addresses(port) == set(), name
    assert not (home.prefect_home / "server.json").exists()  # its record went with it
    with sqlite3.connect(home.prefect_home / "prefect.db") as db:
        assert db.execute("SELECT count(*) FROM flow_run WHERE name = ?",
                          (RUN_NAME,)).fetchone() == (1,)


@pytest.mark.slow
def test_sigterm_while_starting_stops_them_all_too(settings: Settings) -> None:
    """SIGTERM (what a service manager or ``kill`` sends) in the middle of the start: the
    servers already launched, and those still starting, are all stopped."""
    import psutil

    out = settings.workbook_home / "ui-command.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    ports = _ports()
    with out.open("wb") as log:
        process = subprocess.Popen(_command(*_port_args(ports)), stdout=log,
                                   stderr=subprocess.STDOUT, env=_ui_env(settings), cwd=REPO_ROOT)
    try:
        # MLflow's and Prefect's servers launched; Evidently's most likely still importing
        wait_until_healthy(process, lambda: len(psutil.Process(process.pid).children()) >= 2,
                           what="the UI servers launched", timeout=60, log_path=out)
        children = _descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0, out.read_text()
        assert "Ctrl-C stops them." not in out.read_text()  # it was stopped while starting
        assert _alive(children) == []
        assert _processes_mentioning(str(settings.workbook_home)) == []  # launched later too
        assert all(listening_addresses(port) == set() for port in ports.values())
    finally:
        if process.poll() is None:
            for child in _descendants(process.pid):
                child.kill()
            process.kill()
            process.wait(timeout=30)


def test_a_taken_port_is_one_line_and_nothing_starts(settings: Settings) -> None:
    ports = _ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports["--prefect-port"] = taken.getsockname()[1]
        done = subprocess.run(_command(*_port_args(ports)), capture_output=True, text=True,
                              env=_ui_env(settings), cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert f"port {ports['--prefect-port']} on 127.0.0.1 is taken (--prefect-port)" in lines[0]
    assert "starting" not in done.stdout
    assert not settings.workbook_home.exists()  # nothing was started, nothing written
    assert all(listening_addresses(port) == set() for port in ports.values())


def test_the_same_port_twice_is_refused() -> None:
    from workbook.ui import PortTakenError, check_ports

    port = free_port()
    with pytest.raises(PortTakenError, match=f"--evidently-port {port} is also --mlflow-port"):
        check_ports("127.0.0.1", {"--mlflow-port": port, "--prefect-port": free_port(),
                                  "--evidently-port": port})


def test_the_command_defaults_are_the_modules_and_stay_off_the_other_defaults() -> None:
    import typer

    from workbook import ui
    from workbook.cli import app

    command = typer.main.get_command(app).commands["ui"]  # type: ignore[attr-defined]
    defaults = {p.name: p.default for p in command.params}
    assert defaults == {"mlflow_port": ui.MLFLOW_PORT, "prefect_port": ui.PREFECT_PORT,
                        "evidently_port": ui.EVIDENTLY_PORT, "host": "127.0.0.1"}
    others = {8000, 8001, 5000, 4200}  # level 2/4 serve, level4 dashboard, the tools' own
    assert not others & {ui.MLFLOW_PORT, ui.PREFECT_PORT, ui.EVIDENTLY_PORT}


def test_team_servers_are_shown_not_started(tmp_path: Path) -> None:
    """With MLFLOW_TRACKING_URI=http://… and PREFECT_API_URL set, those servers are the UIs:
    printed as they are, never started nor stopped by the command."""
    from workbook.ui import start_mlflow_ui, start_prefect_ui

    team = Settings(workbook_home=tmp_path / "workbook",
                    mlflow_tracking_uri="http://127.0.0.1:5999/",
                    prefect_api_url="http://127.0.0.1:4999/api")
    mlflow, prefect = start_mlflow_ui(team, free_port()), start_prefect_ui(team, free_port())
    assert (mlflow.url, prefect.url) == ("http://127.0.0.1:5999", "http://127.0.0.1:4999")
    assert mlflow.stop is prefect.stop is None and mlflow.process is prefect.process is None
    assert "left running" in prefect.line()
    assert not team.workbook_home.exists()
