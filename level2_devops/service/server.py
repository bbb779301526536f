"""Run the service under gunicorn, in this process: ``mlops-levels level2 serve``.

``serve(options, settings, source_factory, sink_factory=None)``: the command line builds the
factory (level 2: ``ModelFileSource`` on a file; level 4: the registry) and this module decides
when it runs. In order, in the process that becomes the gunicorn master:

1. the port is checked;
2. Prometheus' multiprocess folder is made (fresh for every run, under WORKBOOK_HOME) and
   exported, so that every metric made from here on, the source's own included, is shared
   between workers;
3. the source is built, once, and its model loaded (a bad file is reported in one line, and the
   folder removed, before any socket is bound); the sink is built; the app is made;
4. gunicorn runs with ``preload_app``: the workers fork from this app, the model is in memory
   once, shared copy-on-write. ``pre_fork`` lets a source that can refresh itself do so in
   the master first (level 4: a worker forked after a promotion starts with the new
   champion). ``post_fork`` starts the source and the sink in each worker
   (threads made before a fork do not run in the child, so a poller that reloads the model runs
   in every worker, and each worker reloads on its own); ``worker_exit`` closes them.

The folder belongs to the master: a worker that exits (HUP, TTOU, timeout, a crash) leaves it in
place, and ``child_exit`` marks the worker's live gauges dead. The master removes it when it stops.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxi_common.errors import BadInputError
from taxi_common.settings import Settings

if TYPE_CHECKING:
    from level2_devops.service.model_source import SourceFactory
    from level2_devops.service.sink import SinkFactory


@dataclass(frozen=True)
class ServeOptions:
    """What ``level2 serve`` was asked for (the model comes from the source factory)."""

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
    """gunicorn hook, in the master: a worker exited, so its live Prometheus gauges go."""
    from level2_devops.service.metrics import mark_worker_dead

    mark_worker_dead(worker.pid)


def gunicorn_settings(options: ServeOptions, app: Any) -> dict[str, Any]:
    """The gunicorn settings of a run (names as in gunicorn's config file); the hooks start
    ``app``'s source and sink in each worker after the fork and close them when it exits."""
    from level2_devops.app import close_service, refresh_before_fork, start_service

    def pre_fork(server: Any, worker: Any) -> None:
        refresh_before_fork(app)

    def post_fork(server: Any, worker: Any) -> None:
        start_service(app)

    def worker_exit(server: Any, worker: Any) -> None:
        close_service(app)

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
        "pre_fork": pre_fork,
        "post_fork": post_fork,
        "worker_exit": worker_exit,
        "child_exit": _child_exit,
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


def serve(options: ServeOptions, settings: Settings, source_factory: SourceFactory, *,
          sink_factory: SinkFactory | None = None,
          app_config: Mapping[str, Any] | None = None, require_model: bool = True) -> None:
    """Serve the source that ``source_factory`` builds under gunicorn (blocks); the order of
    the steps is in the module docstring. ``sink_factory`` and ``app_config`` go to
    ``create_app``. A model that cannot be loaded ends here, in one line, before any socket is
    bound, unless ``require_model`` is False (level 4: the workers keep polling the registry
    and answer 503 until a model loads)."""
    if options.workers < 1:
        raise BadInputError(f"--workers {options.workers}: use 1 or more")
    check_port_free(options.host, options.port)
    with multiprocess_dir(settings) as metrics_dir:
        from level2_devops.app import create_app
        from level2_devops.service.model_source import ModelUnavailableError

        source = source_factory()
        try:
            served = source.serving()  # loads the model once, in the master
        except ModelUnavailableError as exc:
            if require_model:
                raise
            # level 4: the workers keep trying; /health answers 503 until a model loads
            print(f"warning: {exc}", flush=True)
            served = ()
        sink = sink_factory() if sink_factory is not None else None
        app = create_app(source, app_config, sink=sink)
        models = ", ".join(f"{s.variant} {s.version}" for s in served) or "no model yet"
        print(f"serving {models} ({source}) on http://{options.host}:{options.port} with "
              f"{options.workers} workers (metrics in {metrics_dir})", flush=True)
        run_gunicorn(app, gunicorn_settings(options, app))
