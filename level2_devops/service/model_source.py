"""Where the service gets its model: the ``ModelSource`` protocol and level 2's ``ModelFileSource``.

The app asks its source on every request which model serves it: ``source.select(request)``
returns a ``Served`` (the model, its version and its *variant*). The source decides what "the
current model" is: level 2's is one file, loaded once, always variant ``champion``; level 4's
serves the registry's champion and challenger (chosen per request, sticky on ``ride_id``) and
reloads when an alias moves. A loaded model predicts from arrays (``RideBatch``), never from
request JSON.

A source's life under gunicorn (``service.server``): it is *built* once in the master, before
the workers fork (so a model loaded then is in memory once, shared copy-on-write); ``start()``
runs in each worker after the fork and ``close()`` when the worker exits. Threads do not survive
``fork()``, so anything that runs in the background (a poller that reloads the model, a
database engine, an MLflow client) must be created in ``start()``: a reload then happens inside
each worker, independently.

Versions are plain strings at every level, as MLflow writes them: ``"3"``, never ``"v3"``
(level 2's file ``taxi-duration-v3.pkl`` serves version ``"3"``). Responses, ``/health`` and
the metric labels use the same string.

``LinearLookupModel`` serves the one-hot linear pipelines (``TripFeaturizer`` + a linear
regressor) without pandas or scipy: the prediction is ``(table[pu, do] + coef_distance · d) +
intercept``, where ``table[pu, do]`` is the pipeline's own sparse product for that zone pair. It is
used only when it reproduces ``pipeline.predict`` bit for bit on every zone pair; any other
pipeline is served by ``PipelineModel`` (a DataFrame and ``pipeline.predict``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from level2_devops.service.rides import MAX_ZONE, RideBatch
from taxi_common.errors import WorkbookError

DEFAULT_VARIANT = "champion"


class ModelUnavailableError(WorkbookError):
    """No model can be served right now (the service answers 503)."""


@runtime_checkable
class LoadedModel(Protocol):
    """A model ready to serve: its version label and a vectorised predict."""

    version: str

    def predict(self, rides: RideBatch) -> np.ndarray:
        """Predicted trip durations in minutes, one float64 per ride."""
        ...


@dataclass(frozen=True, slots=True)
class PredictionRequest:
    """What a source may look at to choose the model of one request.

    ``rides.ride_ids`` holds each ride's optional ``ride_id`` when the app accepts that field
    (``ACCEPT_RIDE_ID``), else None; ``headers`` are the HTTP request headers (read-only);
    ``request_id`` is set when the app gives requests an id (a sink or ``RESPONSE_FIELDS``).
    """

    rides: RideBatch
    headers: Mapping[str, str]
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Served:
    """The model chosen for a request: the model, its version, and the variant it serves as."""

    model: LoadedModel
    version: str
    variant: str = DEFAULT_VARIANT


@runtime_checkable
class ModelSource(Protocol):
    """Chooses the model of each request; cheap per call (no I/O on the request path)."""

    def select(self, request: PredictionRequest) -> Served:
        """The model for ``request``; ``ModelUnavailableError`` when there is none."""
        ...

    def serving(self) -> tuple[Served, ...]:
        """Every model served now, the default variant first; ``ModelUnavailableError`` when
        there is none (``/health`` then answers 503)."""
        ...

    def start(self) -> None:
        """Start background work (threads, connections); in each worker, after the fork."""
        ...

    def close(self) -> None:
        """Stop what ``start`` started; when the worker exits."""
        ...


SourceFactory = Callable[[], ModelSource]
"""What ``level2 serve`` is given: it builds the source once, in the gunicorn master."""

_FILE_VERSION = re.compile(r"v(\d+)")


def served_version(label: str) -> str:
    """The plain version string of a model file's version label: ``"v3"`` -> ``"3"``."""
    match = _FILE_VERSION.fullmatch(label)
    return match[1] if match else label


class PipelineModel:
    """Any fitted pipeline over raw trip columns, through a DataFrame."""

    def __init__(self, pipeline: Any, version: str) -> None:
        self.pipeline, self.version = pipeline, version

    def predict(self, rides: RideBatch) -> np.ndarray:
        """``pipeline.predict`` on the rides as a DataFrame."""
        return np.asarray(self.pipeline.predict(rides.to_frame()), dtype=np.float64)


class LinearLookupModel:
    """A one-hot linear pipeline as a zone-pair table, a distance coefficient and an intercept."""

    def __init__(self, table: np.ndarray, distance_coef: float, intercept: float,
                 version: str) -> None:
        self.table, self.distance_coef, self.intercept = table, distance_coef, intercept
        self.version = version

    def predict(self, rides: RideBatch) -> np.ndarray:
        """``(table[pu, do] + coef · distance) + intercept``, in the pipeline's summation order."""
        return (self.table[rides.pickup, rides.dropoff]
                + rides.distance * self.distance_coef) + self.intercept


def _all_zone_pairs(distance: float) -> RideBatch:
    """Every (pickup, drop-off) pair of zones 0..MAX_ZONE, all with the same distance."""
    zones = np.arange(MAX_ZONE + 1, dtype=np.int64)
    pickup, dropoff = np.meshgrid(zones, zones, indexing="ij")
    n = pickup.size
    return RideBatch(pickup.ravel(), dropoff.ravel(), np.full(n, distance))


def _in_chunks(predict: Callable[[RideBatch], np.ndarray], rides: RideBatch,
               size: int = 8192) -> np.ndarray:
    """``predict`` over ``rides`` in slices of ``size`` rows, concatenated."""
    parts = [predict(RideBatch(rides.pickup[i:i + size], rides.dropoff[i:i + size],
                               rides.distance[i:i + size]))
             for i in range(0, len(rides), size)]
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])


def linear_lookup(pipeline: Any, version: str) -> LinearLookupModel | None:
    """The lookup form of ``pipeline``, or None when it is not a one-hot linear pipeline or
    the lookup is not exactly equal to ``pipeline.predict`` on every zone pair."""
    from taxi_common.features import TripFeaturizer

    steps = getattr(pipeline, "named_steps", {})
    featurizer, regressor = steps.get("featurize"), steps.get("regress")
    coef, intercept = getattr(regressor, "coef_", None), getattr(regressor, "intercept_", None)
    if not isinstance(featurizer, TripFeaturizer) or np.ndim(coef) != 1 or np.ndim(intercept) != 0:
        return None
    coef = np.asarray(regressor.coef_, dtype=np.float64)
    zero = _all_zone_pairs(0.0)
    # Row sums of the one-hot matrix times coef at distance 0: each pair's zone coefficients,
    # summed in the same order as the sparse product in pipeline.predict.
    table = _in_chunks(lambda part: featurizer.transform(part.to_frame()) @ coef, zero)
    model = LinearLookupModel(table.reshape(MAX_ZONE + 1, MAX_ZONE + 1),
                              float(coef[featurizer.distance_column_]),
                              float(regressor.intercept_), version)
    distances = np.random.default_rng(0).uniform(0.0, 200.0, len(zero))
    probe = RideBatch(zero.pickup, zero.dropoff, distances)
    expected = _in_chunks(PipelineModel(pipeline, version).predict, probe)
    return model if np.array_equal(model.predict(probe), expected) else None


def serving_model(pipeline: Any, version: str) -> LoadedModel:
    """The fastest exact way to serve ``pipeline``: a lookup if possible, else the pipeline."""
    return linear_lookup(pipeline, version) or PipelineModel(pipeline, version)


class ModelFileSource:
    """Level 2's source: one model file written by ``model_store.save_model``, loaded once and
    served to every request as variant ``champion``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._served: Served | None = None
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return str(self.path)

    def load(self) -> LoadedModel:
        """The model in the file (read on the first call); a clear error if it cannot be read."""
        return self._load().model

    def select(self, request: PredictionRequest) -> Served:
        """The file's model, whatever the request."""
        served = self._served
        return served if served is not None else self._load()

    def serving(self) -> tuple[Served, ...]:
        """The file's model (read on the first call)."""
        return (self._load(),)

    def start(self) -> None:
        """Nothing to start: the file is read once, before the workers fork."""

    def close(self) -> None:
        """Nothing to close."""

    def _load(self) -> Served:
        served = self._served
        if served is None:
            with self._lock:
                if self._served is None:
                    model = self._read()
                    self._served = Served(model, model.version, DEFAULT_VARIANT)
                served = self._served
        return served

    def _read(self) -> LoadedModel:
        """Unpickle the file and wrap it for serving."""
        from level2_devops.model_store import load_model

        try:
            pipeline, metadata = load_model(self.path)
        except WorkbookError as exc:
            raise ModelUnavailableError(str(exc)) from exc
        return serving_model(pipeline, served_version(str(metadata["version"])))
