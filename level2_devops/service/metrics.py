"""Prometheus metrics of the service, correct under gunicorn's N worker processes.

Each app owns a ``CollectorRegistry``, so apps made in one process (tests) do not share counters.
Under gunicorn the serve command sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh folder before
prometheus_client is imported: every worker then writes its values to memory-mapped files there,
``/metrics`` aggregates all of them (``MultiProcessCollector``), and gunicorn's ``child_exit`` hook
calls :func:`mark_worker_dead` so live gauges of a dead worker disappear.

The folder belongs to the process that made it (the gunicorn master): a worker that exits leaves
it alone, and the counters of exited workers keep counting (their files stay, as
prometheus_client intends for counters and histograms).

Exposed metrics (names as Prometheus shows them):

- ``taxi_http_requests_total{endpoint, method, status}`` (``method``: one of ``HTTP_METHODS``
  or ``other``; ``endpoint``: a route, or ``unmatched``)
- ``taxi_http_request_duration_seconds{endpoint}`` (histogram)
- ``taxi_predictions_total{model_version, variant}``: rides predicted
- ``taxi_predicted_duration_seconds{variant}`` (histogram of predicted values, in seconds: the
  API answers in minutes, Prometheus names carry the base unit, and ``promtool check metrics``
  rejects ``_minutes``)
- ``taxi_model_info{model_version, variant}``: 1 while some live worker serves that version as
  that variant (multiprocess mode ``livemax``: a dead worker's value goes, and under A/B the
  champion's and the challenger's lines are separate, so neither flips the other to 0)
"""

from __future__ import annotations

import os

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Predicted-duration buckets in seconds: 1, 2, 5, 10, 15, 20, 30, 45, 60 and 90 minutes.
DURATION_BUCKETS = (60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The ``method`` label's values; any other method a client sends is counted as ``other``: a
#: label taken from the client unchecked would make one time series per invented method, forever.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_METHOD = "other"


def multiprocess_dir() -> str | None:
    """The multiprocess folder when the service runs under gunicorn, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """Observe every value of ``values`` with one update per bucket, not one per value.

    Equivalent to ``for v in values: histogram.observe(v)`` (a test checks it) but a 1,000-ride
    batch costs a dozen updates instead of 2,000 locked writes. It uses two internals of
    prometheus_client 0.26 (``_upper_bounds``, ``_buckets``/``_sum``); the pin keeps them stable.
    """
    if not len(values):
        return
    bounds = np.asarray(histogram._upper_bounds, dtype=np.float64)
    # Bucket i counts values in (bounds[i-1], bounds[i]]: observe() picks the first bound >= v.
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(np.sum(values)))


class ServiceMetrics:
    """The service's metric objects, registered in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter("taxi_http_requests", "HTTP requests by endpoint and status.",
                                ["endpoint", "method", "status"], registry=reg)
        self.latency = Histogram("taxi_http_request_duration_seconds",
                                 "Time from request start to response, in seconds.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=reg)
        self.predictions = Counter("taxi_predictions", "Rides predicted.",
                                   ["model_version", "variant"], registry=reg)
        self.predicted_seconds = Histogram("taxi_predicted_duration_seconds",
                                           "Predicted trip durations, in seconds.", ["variant"],
                                           buckets=DURATION_BUCKETS, registry=reg)
        self.model_info = Gauge("taxi_model_info",
                                "1 for each model version served, by variant.",
                                ["model_version", "variant"], multiprocess_mode="livemax",
                                registry=reg)
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}
        self._prediction_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._serving: dict[str, str] = {}  # variant -> version marked 1 by this process

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one request and its latency (label children are cached: labels() is costly);
        a method outside ``HTTP_METHODS`` is counted as ``other``."""
        if method not in HTTP_METHODS:
            method = OTHER_METHOD
        key = (endpoint, method, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(
                endpoint, method, str(status))
        counter.inc()
        latency = self._latency_children.get(endpoint)
        if latency is None:
            latency = self._latency_children[endpoint] = self.latency.labels(endpoint)
        latency.observe(seconds)

    def observe_predictions(self, version: str, variant: str, minutes: np.ndarray) -> None:
        """Count the rides of one response served by ``version`` as ``variant``, and their
        predicted durations (given in minutes, observed in seconds)."""
        if self._serving.get(variant) != version:
            self.mark_serving(variant, version)
        children = self._prediction_children.get((version, variant))
        if children is None:
            children = self._prediction_children[(version, variant)] = (
                self.predictions.labels(version, variant), self.predicted_seconds.labels(variant))
        counter, histogram = children
        counter.inc(len(minutes))
        if len(minutes) == 1:
            histogram.observe(float(minutes[0]) * 60.0)
        else:
            observe_many(histogram, minutes * 60.0)

    def mark_serving(self, variant: str, version: str | None) -> None:
        """Set ``taxi_model_info`` to 1 for ``version`` as ``variant`` and to 0 for the version
        this process served as ``variant`` before (``version`` None: the variant is gone)."""
        previous = self._serving.get(variant)
        if previous is not None and previous != version:
            self.model_info.labels(previous, variant).set(0)
        if version is None:
            self._serving.pop(variant, None)
            return
        self.model_info.labels(version, variant).set(1)
        self._serving[variant] = version

    def show_serving(self, served: dict[str, str]) -> None:
        """Make ``taxi_model_info`` say exactly ``served`` (variant -> version) for this
        process: a reload or a challenger that went away is seen without any prediction."""
        for variant in [v for v in self._serving if v not in served]:
            self.mark_serving(variant, None)
        for variant, version in served.items():
            if self._serving.get(variant) != version:
                self.mark_serving(variant, version)

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text of every worker (multiprocess mode) or of this app."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """gunicorn ``child_exit`` hook body: drop the live gauges of a worker that exited."""
    directory = multiprocess_dir()
    if directory is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)
