"""Where served predictions go after the response: the ``PredictionSink`` protocol.

Level 2 has no sink (``create_app(..., sink=None)``): nothing is recorded and nothing is built
per request for it. Level 4 logs every prediction: its sink's ``submit`` puts the record on a
queue and a background thread writes batches to the prediction log, so the request never waits
for a database.

A sink lives like a model source under gunicorn: built once in the master, ``start()`` in each
worker after the fork (threads and connections are made there: they do not survive ``fork()``),
``close()`` when the worker exits (flush what is queued).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from level2_devops.service.rides import RideBatch


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One served response: its request id, when it was served (Unix time, seconds), the rides
    (features and optional ``ride_ids``), the variant and model version that served it, and the
    predicted minutes (one per ride, in order). The arrays belong to the record: nothing else
    writes to them, so a sink may keep them and read them from another thread."""

    request_id: str
    time: float
    rides: RideBatch
    variant: str
    model_version: str
    minutes: np.ndarray


@runtime_checkable
class PredictionSink(Protocol):
    """Receives every served prediction, off the request path."""

    def start(self) -> None:
        """Start the writer (thread, connection); in each worker, after the fork."""
        ...

    def submit(self, record: PredictionRecord) -> None:
        """Take one record; called on the request path, so it must only enqueue, never block
        on I/O. An exception here is logged and does not fail the request."""
        ...

    def close(self) -> None:
        """Write what is still queued and stop; when the worker exits."""
        ...


SinkFactory = Callable[[], PredictionSink]
"""What ``level2 serve`` may be given besides the source factory: built once, in the master."""
