"""Level 4's service: level 2's ``create_app`` with a registry source and a prediction-log sink.

``RegistrySource`` serves ``models:/taxi-duration@champion`` and, for A/B tests or shadow scoring,
``@challenger``. An :class:`~level4_deployment.watcher.AliasWatcher` follows the aliases: it polls
the registry in each gunicorn worker (the thread is started after the fork), loads the pinned
version that an alias moved to, and swaps it in. The per-request path does no I/O: it reads the
current model from memory and predicts with level 2's serving model (the zone-pair lookup for
linear pipelines, the native sklearn pipeline otherwise; never pyfunc).

A/B: a ride is served by the challenger when the salted SHA-256 bucket of its ``ride_id`` is below
the challenger's share (:mod:`level4_deployment.routing`), so the same ride gets the same variant
in every worker and after a restart; a request without ``ride_id`` is assigned at random. A batch
request is served by one variant, chosen by its first ride.

Shadow: the challenger also scores every ride the champion served, without serving it; the sink
logs both predictions, which gives a paired comparison.

``PredictionLogSink`` hands every served prediction to the prediction log's background writer
(:class:`~level4_deployment.log_writer.PredictionLogWriter`): the request only enqueues — and,
with the crash journal on (the default of ``level4 serve``; ``--no-journal`` turns it off),
appends the record to the worker's journal file first (:mod:`level4_deployment.journal`), so
that a worker killed before its writer committed the rows it answered for loses none of them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from level2_devops.service.model_source import (
    ModelUnavailableError,
    PredictionRequest,
    Served,
)
from level4_deployment.routing import CHALLENGER, CHAMPION, DEFAULT_SALT, choose_variant
from level4_deployment.watcher import AliasWatcher
from taxi_common.settings import Settings

if TYPE_CHECKING:
    from level2_devops.service.sink import PredictionRecord
    from level4_deployment.log_writer import PredictionLogWriter

_log = logging.getLogger(__name__)
#: After a failed registry check in the gunicorn master, how long it forks without checking.
MASTER_CHECK_BACKOFF = 30.0
#: How long the master waits for the champion before serving anyway (503 until it loads).
DEFAULT_STARTUP_TIMEOUT = 10.0
DEFAULT_RELOAD_INTERVAL = 5.0
SHADOW_FAILURE_LOG_INTERVAL = 60.0  # seconds between two log lines about a failing shadow model
_shadow_failure_logged = [-SHADOW_FAILURE_LOG_INTERVAL]  # monotonic time of the last one


class RegistrySource:
    """The model source of level 4: champion (and challenger) from the MLflow registry."""

    def __init__(self, settings: Settings, *, challenger_share: float = 0.0,
                 shadow: bool = False, reload_interval: float = DEFAULT_RELOAD_INTERVAL,
                 salt: str = DEFAULT_SALT) -> None:
        if not 0.0 <= challenger_share <= 1.0:
            raise ValueError(f"challenger_share {challenger_share} must be within 0..1")
        self.tracking_uri = settings.tracking_uri
        self.challenger_share, self.shadow, self.salt = challenger_share, shadow, salt
        aliases = (CHAMPION, CHALLENGER) if challenger_share > 0 or shadow else (CHAMPION,)
        self.watcher = AliasWatcher(aliases, self._read_aliases, self._load,
                                    interval=reload_interval)
        self._client: Any = None
        self._client_pid: int | None = None
        self._rng = random.Random()
        self._start_lock = threading.Lock()
        self._master_checked = -float("inf")  # monotonic time of the master's last check

    def __str__(self) -> str:
        ab = f", challenger {self.challenger_share:.0%}" if self.challenger_share else ""
        return f"registry {self.tracking_uri}{ab}{', shadow' if self.shadow else ''}"

    # --- registry access (on the watcher's thread) -----------------------------------------

    def _registry(self) -> Any:
        """An MLflow client of this process (a client made before a fork is not reused)."""
        import os

        from level3_training.registry import client_for

        if self._client is None or self._client_pid != os.getpid():
            self._client, self._client_pid = client_for(self.tracking_uri), os.getpid()
        return self._client

    def _read_aliases(self) -> dict[str, str]:
        from level3_training.registry import aliases

        return aliases(self._registry())

    def _load(self, version: str) -> Any:
        from level2_devops.service.model_source import serving_model
        from level3_training.registry import load_version

        pinned, pipeline = load_version(self._registry(), version)
        return serving_model(pipeline, pinned)

    # --- the ModelSource protocol ----------------------------------------------------------

    def select(self, request: PredictionRequest) -> Served:
        """The champion, or the challenger for its share of rides (sticky by ``ride_id``)."""
        champion = self.watcher.get(CHAMPION)
        if champion is None:
            raise ModelUnavailableError(self.unavailable_reason())
        if self.challenger_share > 0:
            challenger = self.watcher.get(CHALLENGER)
            if challenger is not None:
                ids = request.rides.ride_ids
                ride_id = ids[0] if ids else None
                if choose_variant(ride_id, self.challenger_share, salt=self.salt,
                                  rng=self._rng) == CHALLENGER:
                    return Served(challenger.model, challenger.version, CHALLENGER)
        return Served(champion.model, champion.version, CHAMPION)

    def serving(self) -> tuple[Served, ...]:
        """Every loaded variant, champion first; ``ModelUnavailableError`` without a champion."""
        champion = self.watcher.get(CHAMPION)
        if champion is None:
            raise ModelUnavailableError(self.unavailable_reason())
        out = [Served(champion.model, champion.version, CHAMPION)]
        challenger = self.watcher.get(CHALLENGER)
        if challenger is not None and self.challenger_share > 0:
            out.append(Served(challenger.model, challenger.version, CHALLENGER))
        return tuple(out)

    def shadow_model(self) -> Any | None:
        """The challenger as loaded now, when shadow scoring is on."""
        return self.watcher.get(CHALLENGER) if self.shadow else None

    def start(self) -> None:
        """In the worker: check the registry now, in the background, then every interval."""
        with self._start_lock:
            self.watcher.start(check_first=True)

    def close(self) -> None:
        """Stop polling."""
        self.watcher.close()

    def health_details(self) -> dict[str, Any]:
        """What ``/health`` adds: versions per alias, the last check and its error, the split."""
        return {**self.watcher.status(), "challenger_share": self.challenger_share,
                "shadow": self.shadow}

    def unavailable_reason(self) -> str:
        """Why there is no champion to serve, in one line, with the fix."""
        error = self.watcher.status()["last_error"]
        if error:
            return (f"no champion loaded yet: the registry at {self.tracking_uri} could not be "
                    f"read ({error}); retrying every {self.watcher.interval:g} s")
        return ("no champion loaded yet: the registry has no @champion of taxi-duration; "
                "promote a version (`mlops-levels level4 deploy` or `level3 promote V`)")

    def refresh_before_fork(self) -> None:
        """In the gunicorn master, before it forks a worker: check the registry (at most once
        per reload interval; after a failure, not for ``MASTER_CHECK_BACKOFF`` seconds), so that
        a worker forked after a promotion — the replacement of a dead one, every worker after a
        HUP — starts with the current champion instead of serving the one the master loaded
        at start until its own first check. No thread runs in the master: nothing is held
        across the fork."""
        now = time.monotonic()
        if now - self._master_checked < self.watcher.interval:
            return
        self.watcher.check()
        failed = self.watcher.status()["last_error"] is not None
        self._master_checked = time.monotonic() + (MASTER_CHECK_BACKOFF if failed else 0.0)

    def load_in_master(self, timeout: float = DEFAULT_STARTUP_TIMEOUT) -> bool:
        """Load the champion before gunicorn forks (the workers then share it); False when the
        registry does not give one within ``timeout`` (the workers keep trying)."""
        loaded = self.watcher.wait_until_loaded(CHAMPION, timeout)
        self._master_checked = time.monotonic()
        return loaded


class PredictionLogSink:
    """Writes every served prediction (and its shadow prediction) to the prediction log.

    ``submit`` is on the request path: it appends the record (and the shadow model of the
    moment, with shadow scoring on) to the writer's queue and returns. The rows — one tuple per
    ride — and the shadow predictions are made on the writer's thread, by :func:`record_rows`.
    """

    def __init__(self, writer: PredictionLogWriter, source: RegistrySource | None = None) -> None:
        self.writer, self.source = writer, source
        self._shadow = source is not None and source.shadow
        self._line = None  # record -> journal line, when the writer keeps a journal
        if writer.journal is not None:
            from level4_deployment.journal import record_line

            self._line = record_line

    def start(self) -> None:
        """Start the writer's thread and database connection (in the worker)."""
        self.writer.start()

    def close(self) -> None:
        """Write everything queued, then stop."""
        self.writer.close()

    def health_details(self) -> dict[str, int]:
        """What ``/health`` shows of the prediction log of this process: the writer's counts
        (submitted, written, dropped and why, queued; :class:`~level4_deployment.log_writer.
        WriterStats`), so that no dropped row goes unseen."""
        return self.writer.stats.as_dict()

    def submit(self, record: PredictionRecord) -> None:
        """Queue the record's rows (built later, off the request path); journal it first."""
        shadow = None
        if self._shadow and record.variant == CHAMPION:
            shadow = self.source.shadow_model()  # type: ignore[union-attr]
        if self._line is not None:
            self.writer.submit_deferred(len(record.minutes), record_rows, record, shadow,
                                        journal_line=self._line(record))
        else:
            self.writer.submit_deferred(len(record.minutes), record_rows, record, shadow)


def record_rows(record: PredictionRecord, shadow: Any | None = None) -> list[tuple[Any, ...]]:
    """The prediction-log rows of one served record, in ``store.PREDICTION_COLUMNS`` order:
    one per ride, with ``shadow``'s predictions (an ``AliasModel``) when given. Runs on the log
    writer's thread. A shadow model that fails is logged and its predictions left out: the
    served predictions are still written."""
    rides = record.rides
    n = len(rides)
    shadow_version, shadow_minutes = None, [None] * n
    if shadow is not None:
        try:
            shadow_minutes = np.asarray(shadow.model.predict(rides), np.float64).tolist()
            shadow_version = shadow.version
        except Exception:  # noqa: BLE001 - the served prediction is logged regardless
            now = time.monotonic()
            if now - _shadow_failure_logged[0] >= SHADOW_FAILURE_LOG_INTERVAL:
                _shadow_failure_logged[0] = now
                _log.exception("shadow model %s failed on request %s; its rows are logged "
                               "without shadow predictions (logged at most every %.0f s)",
                               shadow.version, record.request_id, SHADOW_FAILURE_LOG_INTERVAL)
    ids = rides.ride_ids or [None] * n
    request_id, at, variant, version = (record.request_id, record.time, record.variant,
                                        record.model_version)
    return [(request_id, at, ride_id, pu, do, miles, variant, version, minutes, shadow_version,
             shadow_minute)
            for ride_id, pu, do, miles, minutes, shadow_minute in zip(
                ids, rides.pickup.tolist(), rides.dropoff.tolist(), rides.distance.tolist(),
                record.minutes.tolist(), shadow_minutes, strict=True)]


#: The level-4 API: rides may carry ``ride_id``; responses add ``variant`` and ``request_id``.
APP_CONFIG = {"ACCEPT_RIDE_ID": True, "RESPONSE_FIELDS": ("variant", "request_id")}


def serve_registry(options: Any, settings: Settings, *, challenger_share: float = 0.0,
                   shadow: bool = False,
                   reload_interval: float = DEFAULT_RELOAD_INTERVAL,
                   startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
                   log_predictions: bool = True, journal: bool = True) -> None:
    """``level4 serve``: level 2's gunicorn server with the registry source and the log sink
    (with a crash journal per worker unless ``journal`` is False; each worker recovers the
    journals of dead workers when it starts).

    The champion is loaded once in the master before the fork (when the registry answers within
    ``startup_timeout``); each worker then polls the aliases itself. With the registry down at
    start, the service still starts and answers 503 until a champion loads.
    """
    from level2_devops.service.server import serve
    from level4_deployment.log_writer import PredictionLogWriter

    built: dict[str, RegistrySource] = {}

    def source_factory() -> RegistrySource:
        source = RegistrySource(settings, challenger_share=challenger_share, shadow=shadow,
                                reload_interval=reload_interval)
        source.load_in_master(startup_timeout)
        built["source"] = source
        return source

    def sink_factory() -> PredictionLogSink:
        from level4_deployment.store import create_tables, engine_for

        engine = engine_for(settings)  # the tables, once, in the master: not N workers racing
        create_tables(engine)
        engine.dispose()
        return PredictionLogSink(PredictionLogWriter.for_settings(settings, journal=journal),
                                 built["source"])

    serve(options, settings, source_factory,
          sink_factory=sink_factory if log_predictions else None, app_config=APP_CONFIG,
          require_model=False)
