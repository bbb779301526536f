"""Run the service under gunicorn, in this process: ``mlops-levels level2 serve``.

gunicorn is started through its ``BaseApplication`` API rather than a config file, so the model is
loaded (and a bad file reported in one line) before any socket is bound, and the app the workers
fork from is the one built here (``preload_app``: the model is in memory once, shared
copy-on-write). Prometheus' multiprocess folder is fresh for every run, under WORKBOOK_HOME, and
removed when the server exits.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taxi_common.errors import BadInputError
from taxi_common.settings import Settings


@dataclass(frozen=True)
class ServeOptions:
    """What ``level2 serve`` was asked for."""

    model: Path
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    access_log: bool = False
    timeout: int = 30


def check_port_free(host: str, port: int) -> None:
    """Fail in one line when ``host:port`` cannot be bound (in use, or not a local address)."""
    if not 0 < port < 65536:
        raise BadInputError(f"--port {port} is not a TCP port: use 1-65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BadInputError(f"port {port} on {host} is already in use: stop what uses "
                                    "it or pass another --port") from None
            raise BadInputError(f"cannot listen on {host}:{port} ({exc.strerror}): "
                                "pass another --host or --port") from None


def _use_multiprocess_dir(directory: str | None) -> None:
    """Point prometheus_client at ``directory`` (None: single-process mode), even if imported."""
    if directory is None:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    if "prometheus_client.values" in sys.modules:  # imported earlier: switch its value class now
        from prometheus_client import values

        values.ValueClass = values.get_value_class()


@contextmanager
def multiprocess_dir(settings: Settings) -> Iterator[Path]:
    """A fresh, empty folder for Prometheus' per-worker files, exported as
    ``PROMETHEUS_MULTIPROC_DIR`` before any metric is made; removed, and the variable restored,
    when the block ends (the process goes on: tests and the demo serve in-process too).

    Only the process that made the folder removes it. gunicorn forks its workers inside this
    block, and a worker leaves by raising SystemExit, which runs this ``finally`` in the worker
    too: removing the folder there would break every other worker's metrics."""
    parent = settings.workbook_home / "run"
    parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="prometheus-", dir=parent))
    owner, previous = os.getpid(), os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    _use_multiprocess_dir(str(directory))
    try:
        yield directory
    finally:
        if os.getpid() == owner:
            _use_multiprocess_dir(previous)
            shutil.rmtree(directory, ignore_errors=True)


def _child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: a worker exited, so its live Prometheus gauges go."""
    from level2_devops.service.metrics import mark_worker_dead

    mark_worker_dead(worker.pid)


def gunicorn_settings(options: ServeOptions, metrics_dir: Path) -> dict[str, Any]:
    """The gunicorn settings of a run (names as in gunicorn's config file)."""

    def on_exit(server: Any) -> None:
        shutil.rmtree(metrics_dir, ignore_errors=True)

    return {
        "bind": [f"[{options.host}]:{options.port}" if ":" in options.host
                 else f"{options.host}:{options.port}"],
        "workers": options.workers,
        "worker_class": "sync",
        "preload_app": True,
        "control_socket_disable": True,  # gunicorn 26 would otherwise create ~/.gunicorn
        "accesslog": "-" if options.access_log else None,
        "errorlog": "-",
        "timeout": options.timeout,
        "proc_name": "taxi-duration-service",
        "child_exit": _child_exit,
        "on_exit": on_exit,
    }


def run_gunicorn(wsgi_app: Any, settings: dict[str, Any]) -> None:
    """Run ``wsgi_app`` under gunicorn with ``settings`` until it is stopped (SIGTERM/SIGINT)."""
    from gunicorn.app.base import BaseApplication

    class _Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return wsgi_app

    _Server(prog="mlops-levels level2 serve").run()


def serve(options: ServeOptions, settings: Settings) -> None:
    """Check the port and the model, then serve the model under gunicorn (blocks)."""
    if options.workers < 1:
        raise BadInputError(f"--workers {options.workers}: use 1 or more")
    check_port_free(options.host, options.port)
    from level2_devops.service.model_source import ModelFileSource

    source = ModelFileSource(options.model)
    model = source.load()  # fail here, in one line, before anything is set up
    with multiprocess_dir(settings) as metrics_dir:
        from level2_devops.app import create_app

        app = create_app(source)
        print(f"serving model {model.version} ({options.model}) on "
              f"http://{options.host}:{options.port} with {options.workers} workers", flush=True)
        run_gunicorn(app, gunicorn_settings(options, metrics_dir))
