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
(:class:`~level4_deployment.log_writer.PredictionLogWriter`): the request only enqueues.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
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
#: How long the master waits for the champion before serving anyway (503 until it loads).
DEFAULT_STARTUP_TIMEOUT = 10.0
DEFAULT_RELOAD_INTERVAL = 5.0


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

    def load_in_master(self, timeout: float = DEFAULT_STARTUP_TIMEOUT) -> bool:
        """Load the champion before gunicorn forks (the workers then share it); False when the
        registry does not give one within ``timeout`` (the workers keep trying)."""
        return self.watcher.wait_until_loaded(CHAMPION, timeout)


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).replace(tzinfo=None)


class PredictionLogSink:
    """Writes every served prediction (and its shadow prediction) to the prediction log."""

    def __init__(self, writer: PredictionLogWriter, source: RegistrySource | None = None) -> None:
        self.writer, self.source = writer, source

    def start(self) -> None:
        """Start the writer's thread and database connection (in the worker)."""
        self.writer.start()

    def close(self) -> None:
        """Write everything queued, then stop."""
        self.writer.close()

    def submit(self, record: PredictionRecord) -> None:
        """Enqueue one row per ride; with shadow on, the challenger's prediction too."""
        rides = record.rides
        shadow_version, shadow = None, None
        shadow_model = self.source.shadow_model() if self.source is not None else None
        if shadow_model is not None and record.variant == CHAMPION:
            shadow_version = shadow_model.version
            shadow = np.asarray(shadow_model.model.predict(rides), dtype=np.float64)
        logged_at = _utc(record.time)
        ids = rides.ride_ids or [None] * len(rides)
        pickup, dropoff, distance = (rides.pickup.tolist(), rides.dropoff.tolist(),
                                     rides.distance.tolist())
        minutes = record.minutes.tolist()
        shadow_list = shadow.tolist() if shadow is not None else [None] * len(rides)
        self.writer.submit_many(
            {"request_id": record.request_id, "logged_at": logged_at, "ride_id": ids[i],
             "PULocationID": pickup[i], "DOLocationID": dropoff[i],
             "trip_distance": distance[i], "variant": record.variant,
             "model_version": record.model_version, "prediction": minutes[i],
             "shadow_version": shadow_version, "shadow_prediction": shadow_list[i]}
            for i in range(len(rides)))


#: The level-4 API: rides may carry ``ride_id``; responses add ``variant`` and ``request_id``.
APP_CONFIG = {"ACCEPT_RIDE_ID": True, "RESPONSE_FIELDS": ("variant", "request_id")}


def serve_registry(options: Any, settings: Settings, *, challenger_share: float = 0.0,
                   shadow: bool = False,
                   reload_interval: float = DEFAULT_RELOAD_INTERVAL,
                   startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
                   log_predictions: bool = True) -> None:
    """``level4 serve``: level 2's gunicorn server with the registry source and the log sink.

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
        return PredictionLogSink(PredictionLogWriter.for_settings(settings), built["source"])

    serve(options, settings, source_factory,
          sink_factory=sink_factory if log_predictions else None, app_config=APP_CONFIG,
          require_model=False)
