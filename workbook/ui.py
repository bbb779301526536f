"""``mlops-levels ui``: the tools' own UIs over one ``WORKBOOK_HOME``, until Ctrl-C or SIGTERM.

- MLflow's (runs, the registry, the model cards): ``mlflow server`` on the tracking store of
  the settings (``$WORKBOOK_HOME/mlflow.db`` by default), level 3's :func:`start_mlflow_server`;
  with ``MLFLOW_TRACKING_URI=http://…`` that server already is the UI, and is only printed.
- Prefect's (flow runs, deployments, events): ``prefect server start`` with ``PREFECT_HOME``
  under ``WORKBOOK_HOME``, level 3's :func:`start_server`; recorded as the home's background
  server while it runs, so ``level3 train``, ``level5 run`` and the demo use it meanwhile. A
  server already recorded there, or ``PREFECT_API_URL``, is used and left running.
- Evidently's (the monitoring dashboard): ``evidently ui`` on level 4's workspace, with its
  project and panels set up first (level 4's :mod:`level4_deployment.dashboard`).

The three start side by side (about 10-20 s here). Every server runs in its own process group
and is stopped by group, so nothing outlives the command; a port that is taken ends in one line
before anything starts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from taxi_common.errors import WorkbookError
from taxi_common.local_servers import http_ok, stop_process_group, wait_until_healthy
from taxi_common.settings import Settings

#: Default ports: none of them is another default of the project (level 2 and 4 serve on
#: 8000, ``level4 dashboard`` on 8001) or of the tools (MLflow 5000, Prefect 4200).
MLFLOW_PORT = 5050
PREFECT_PORT = 4250
EVIDENTLY_PORT = 8050
STARTUP_TIMEOUT = 120.0


class PortTakenError(WorkbookError):
    """A port the UIs were asked to use that something else listens on."""


class UiStoppedError(WorkbookError):
    """A UI server that exited while the command was running."""


@dataclass(frozen=True)
class UiPorts:
    """The port of each UI."""

    mlflow: int = MLFLOW_PORT
    prefect: int = PREFECT_PORT
    evidently: int = EVIDENTLY_PORT


@dataclass
class RunningUI:
    """One UI: where to open it, what it shows, and how to stop it (``stop`` is None for a
    server this command did not start, which it leaves running)."""

    name: str
    url: str
    shows: str
    stop: Callable[[], None] | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def line(self) -> str:
        """``NAME  URL  what it shows`` (and whether it was already running)."""
        note = "" if self.stop else "  (already running: left running)"
        return f"{self.name:<10} {self.url:<26} {self.shows}{note}"


# --- ports ----------------------------------------------------------------------------------

def port_is_free(host: str, port: int) -> bool:
    """True when a TCP server could listen on ``host:port`` now (a socket in TIME_WAIT does not
    count as taken, as for the servers themselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_ports(host: str, ports: dict[str, int]) -> None:
    """Raise :class:`PortTakenError` naming the first of ``ports`` (option name → port) that is
    used twice or taken on ``host``."""
    seen: dict[int, str] = {}
    for option, port in ports.items():
        if port in seen:
            raise PortTakenError(f"{option} {port} is also {seen[port]}: give each UI its own port")
        seen[port] = option
        if not port_is_free(host, port):
            raise PortTakenError(f"port {port} on {host} is taken ({option}): stop what listens "
                                 f"there or choose another with {option}")


# --- the three UIs --------------------------------------------------------------------------

def _url(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def start_mlflow_ui(settings: Settings, port: int, host: str = "127.0.0.1") -> RunningUI:
    """MLflow's UI on the settings' tracking store (a tracking server is used as it is)."""
    from level3_training.mlflow_server import start_mlflow_server

    shows = "runs, registered models, model cards"
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://")):
        return RunningUI("MLflow", uri.rstrip("/"), shows)
    log_path = settings.logs_dir / "ui-mlflow.log"
    server = start_mlflow_server(uri, settings.workbook_home / "mlartifacts", log_path,
                                 port=port, host=host, timeout=STARTUP_TIMEOUT)
    return RunningUI("MLflow", server.url, shows, server.stop, server.process, log_path)


def start_prefect_ui(settings: Settings, port: int, host: str = "127.0.0.1") -> RunningUI:
    """Prefect's UI: the configured API's, the home's recorded background server's, or a new
    server under ``WORKBOOK_HOME`` (recorded while it runs)."""
    from level3_training.prefect_server import (
        record_path,
        recorded_server,
        start_server,
        write_record,
    )

    shows = "flow runs, deployments, events"
    if settings.prefect_api_url:
        return RunningUI("Prefect", settings.prefect_api_url.rstrip("/").removesuffix("/api"),
                         shows)
    record = recorded_server(settings.prefect_home)
    if record:
        return RunningUI("Prefect", str(record["api_url"]).removesuffix("/api"), shows)
    server = start_server(settings.prefect_home, port, STARTUP_TIMEOUT, host=host)
    write_record(server, settings.prefect_home)

    def stop() -> None:
        server.stop()
        record_path(settings.prefect_home).unlink(missing_ok=True)

    return RunningUI("Prefect", server.api_url.removesuffix("/api"), shows, stop,
                     server.process, server.log_path)


def start_evidently_ui(settings: Settings, port: int, host: str = "127.0.0.1") -> RunningUI:
    """Evidently's UI on level 4's monitoring workspace (its project and panels made first)."""
    from level4_deployment.dashboard import open_project, ui_command, ui_environment

    open_project(settings)
    log_path = settings.logs_dir / "ui-evidently.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(ui_command(settings, port, host), stdout=log,
                                   stderr=subprocess.STDOUT, env=ui_environment(),
                                   start_new_session=True)
    url = _url(host, port)
    wait_until_healthy(process, lambda: http_ok(f"{url}/api/version", timeout=1),
                       what="evidently ui", timeout=STARTUP_TIMEOUT, log_path=log_path)
    return RunningUI("Evidently", url, "the monitoring dashboard",
                     lambda: stop_process_group(process.pid), process, log_path)


# --- starting together, stopping everything --------------------------------------------------

def _child_pids() -> list[int]:
    """This process's children (each UI server leads its own process group), read from Linux's
    /proc; none elsewhere (a start interrupted there is stopped once it is up)."""
    me = os.getpid()
    children: list[int] = []
    if not Path("/proc/self/stat").exists():
        return children
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == me:
            children.append(int(entry.name))
    return children


def stop_all(uis: list[RunningUI]) -> None:
    """Stop every UI this command started (the others are left running)."""
    for ui in uis:
        if ui.stop:
            ui.stop()


def _abort_starts(futures: list[Future[RunningUI]]) -> None:
    """Stop the servers still starting (their groups, found as our children, until every start
    has given up) and those that are up."""
    while not all(f.done() for f in futures):
        for pid in _child_pids():
            stop_process_group(pid, timeout=5)
        wait(futures, timeout=0.5)
    stop_all([f.result() for f in futures if not f.exception()])


def start_all(starters: list[Callable[[], RunningUI]]) -> list[RunningUI]:
    """Run ``starters`` side by side; the UIs, once all are up. If one fails, or the command
    is interrupted meanwhile, everything started is stopped and the error raised."""
    pool = ThreadPoolExecutor(len(starters), thread_name_prefix="ui-start")
    futures: list[Future[RunningUI]] = []
    try:
        with signals_deferred():  # no start may escape the list that stopping goes through
            futures.extend(pool.submit(start) for start in starters)
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future.done() and future.exception():
                raise future.exception()  # type: ignore[misc]
        return [f.result() for f in futures]
    except BaseException:
        with signals_ignored():
            _abort_starts(futures)
        raise
    finally:
        pool.shutdown(wait=False)


def watch(uis: list[RunningUI], poll: float = 0.5) -> None:
    """Return never: raise :class:`UiStoppedError` when a UI this command started exits."""
    while True:
        for ui in uis:
            if ui.process is not None and ui.process.poll() is not None:
                raise UiStoppedError(f"the {ui.name} UI stopped by itself (exit code "
                                     f"{ui.process.returncode}): see {ui.log_path}")
        time.sleep(poll)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Inside the block SIGINT (Ctrl-C) and SIGTERM raise KeyboardInterrupt, even where the
    shell started the command with SIGINT ignored (``cmd &`` in a script)."""
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM wait: one that came raises KeyboardInterrupt as the
    block ends."""
    came: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: came.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if came:
        raise KeyboardInterrupt


@contextmanager
def signals_ignored() -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM are ignored: stopping is not interrupted half-way."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_uis(settings: Settings, ports: UiPorts | None = None, host: str = "127.0.0.1",
            echo: Callable[[str], None] = print) -> None:
    """Start the three UIs over ``settings``' home, print their addresses, and keep them
    running until Ctrl-C or SIGTERM (or one of them stops: :class:`UiStoppedError`); then
    stop every one this command started."""
    ports = ports or UiPorts()
    check_ports(host, {"--mlflow-port": ports.mlflow, "--prefect-port": ports.prefect,
                       "--evidently-port": ports.evidently})
    echo(f"starting the MLflow, Prefect and Evidently UIs over WORKBOOK_HOME="
         f"{settings.workbook_home} (10-20 s) …")
    uis: list[RunningUI] = []
    with stop_signals_interrupt():
        try:
            uis = start_all([lambda: start_mlflow_ui(settings, ports.mlflow, host),
                             lambda: start_prefect_ui(settings, ports.prefect, host),
                             lambda: start_evidently_ui(settings, ports.evidently, host)])
            for ui in uis:
                echo(ui.line())
            echo("Ctrl-C stops them.")
            watch(uis)
        except KeyboardInterrupt:
            echo("stopping the UIs …")
        finally:
            with signals_ignored():
                stop_all(uis)
    echo("stopped.")
