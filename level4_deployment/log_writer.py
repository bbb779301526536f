"""``PredictionLogWriter``: writes the prediction log off the request path, in batches.

The service hands every served prediction to :meth:`PredictionLogWriter.submit`, which only puts
it on a bounded queue (never blocks, never touches the database). A background thread takes the
rows off the queue and writes them in one transaction per batch: when ``batch_size`` rows are
waiting, or ``flush_interval`` seconds after the first row of a batch arrived.

Nothing is lost silently. A row that does not fit in the queue, or whose batch still fails after
``max_attempts`` writes (database down), is counted in :attr:`stats` and reported on the
``level4_deployment.log_writer`` logger at ERROR level.

Processes and threads: create the writer anywhere, call :meth:`start` in the process that
serves (under gunicorn: in each worker, after the fork — a thread and a connection pool do
not survive ``fork``), and :meth:`close` on shutdown: it writes everything still queued.
A writer started in a forked child starts afresh (its own queue and counts): rows queued in the
parent before the fork are the parent's to write, not each worker's.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Engine

from level4_deployment.store import create_tables, engine_for, write_predictions
from taxi_common.settings import Settings

logger = logging.getLogger(__name__)

Row = Mapping[str, Any]
DROP_LOG_INTERVAL = 10.0  # seconds between two "queue full" log lines


@dataclass(frozen=True)
class WriterStats:
    """What happened to the rows handed to a writer so far."""

    submitted: int = 0
    written: int = 0
    dropped_queue_full: int = 0
    dropped_write_failed: int = 0
    dropped_closed: int = 0
    failed_attempts: int = 0
    batches: int = 0
    queued: int = 0

    @property
    def dropped(self) -> int:
        """Rows that will never be written."""
        return self.dropped_queue_full + self.dropped_write_failed + self.dropped_closed

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (for JSON and metrics)."""
        return {**asdict(self), "dropped": self.dropped}


class PredictionLogWriter:
    """A background thread that writes prediction-log rows in batches (see the module doc)."""

    def __init__(self, engine_factory: Callable[[], Engine], *, batch_size: int = 500,
                 flush_interval: float = 0.5, max_queue: int = 10_000, max_attempts: int = 3,
                 retry_delay: float = 0.2) -> None:
        if batch_size < 1 or max_queue < 1 or max_attempts < 1 or flush_interval <= 0:
            raise ValueError("batch_size, max_queue and max_attempts must be >= 1 and "
                             "flush_interval > 0")
        self._engine_factory = engine_factory
        self.batch_size, self.flush_interval = batch_size, flush_interval
        self.max_attempts, self.retry_delay = max_attempts, retry_delay
        self._queue: queue.Queue[Row] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            ("submitted", "written", "dropped_queue_full", "dropped_write_failed",
             "dropped_closed", "failed_attempts", "batches"), 0)
        self._stopping = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._engine: Engine | None = None
        self._last_drop_log = -DROP_LOG_INTERVAL
        self._max_queue = max_queue
        self._owner_pid = os.getpid()

    @classmethod
    def for_settings(cls, settings: Settings, **options: Any) -> PredictionLogWriter:
        """A writer for the settings' database (tables created on :meth:`start`)."""
        def factory() -> Engine:
            engine = engine_for(settings)
            create_tables(engine)
            return engine

        return cls(factory, **options)

    # --- the request path -------------------------------------------------------------------

    def submit(self, row: Row) -> bool:
        """Queue one row; False (and counted) when it had to be dropped. Never blocks."""
        return self.submit_many((row,)) == 1

    def submit_many(self, rows: Iterable[Row]) -> int:
        """Queue rows; return how many were accepted (the rest are counted as dropped)."""
        accepted = dropped_full = dropped_closed = 0
        for row in rows:
            if self._closed:
                dropped_closed += 1
                continue
            try:
                self._queue.put_nowait(row)
                accepted += 1
            except queue.Full:
                dropped_full += 1
        self._add(submitted=accepted + dropped_full + dropped_closed,
                  dropped_queue_full=dropped_full, dropped_closed=dropped_closed)
        if dropped_full:
            self._report_full_queue(dropped_full)
        return accepted

    def _report_full_queue(self, dropped: int) -> None:
        """Log a full queue at once, then at most every ``DROP_LOG_INTERVAL`` seconds."""
        now = time.monotonic()
        with self._lock:
            due = now - self._last_drop_log >= DROP_LOG_INTERVAL
            if due:
                self._last_drop_log = now
        if due:
            logger.error("prediction log queue full: dropped %d rows (%d so far); the database "
                         "is slower than the traffic", dropped, self.stats.dropped_queue_full)

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> PredictionLogWriter:
        """Open the database and start the writing thread (in the serving process)."""
        if self._thread is not None:
            return self
        if os.getpid() != self._owner_pid:
            self._reset_after_fork()
        self._engine = self._engine_factory()
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer",
                                        daemon=True)
        self._thread.start()
        return self

    def _reset_after_fork(self) -> None:
        """In a forked child: a fresh queue, lock and counts. Rows queued in the parent stay the
        parent's (with several workers, each would otherwise write its own copy of them)."""
        self._queue = queue.Queue(maxsize=self._max_queue)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self._counts, 0)
        self._stopping = threading.Event()
        self._owner_pid = os.getpid()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row queued so far is written or dropped; False on timeout."""
        with self._lock:
            target = self._accepted()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._counts["written"] + self._counts["dropped_write_failed"] >= target:
                    return True
            time.sleep(0.01)
        return False

    def _accepted(self) -> int:
        """Rows that made it into the queue (call with the lock held)."""
        c = self._counts
        return c["submitted"] - c["dropped_queue_full"] - c["dropped_closed"]

    def close(self, timeout: float = 30.0) -> WriterStats:
        """Stop accepting rows, write everything queued, stop the thread; return the stats.

        Rows still queued when ``timeout`` runs out (a database that hangs) are counted as
        dropped and reported.
        """
        if self._thread is None and not self._queue.empty():
            self.start()  # rows queued before start: write them now
        self._closed = True
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("prediction log writer did not finish within %.0f s", timeout)
        left = self._drain_unwritten()
        if left:
            self._add(dropped_write_failed=left)
            logger.error("prediction log writer closed with %d rows unwritten", left)
        if self._engine is not None and (self._thread is None or not self._thread.is_alive()):
            self._engine.dispose()
        return self.stats

    def __enter__(self) -> PredictionLogWriter:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def stats(self) -> WriterStats:
        """The counts so far."""
        with self._lock:
            return WriterStats(**self._counts, queued=self._queue.qsize())

    # --- the writing thread -----------------------------------------------------------------

    def _add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                self._counts[name] += n

    def _drain_unwritten(self) -> int:
        """Empty the queue when no thread will write it any more; return how many rows."""
        if self._thread is not None and self._thread.is_alive():
            return 0
        n = 0
        while True:
            try:
                self._queue.get_nowait()
                n += 1
            except queue.Empty:
                return n

    def _run(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty()):
            batch = self._collect()
            if batch:
                self._write(batch)

    def _collect(self) -> list[Row]:
        """The next batch: up to ``batch_size`` rows, waiting at most ``flush_interval`` after
        the first one (no waiting once closing)."""
        try:
            first = self._queue.get(timeout=self.flush_interval)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.flush_interval
        while len(batch) < self.batch_size:
            remaining = 0.0 if self._stopping.is_set() else deadline - time.monotonic()
            try:
                row = self._queue.get(timeout=remaining) if remaining > 0 else \
                    self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(row)
        return batch

    def _write(self, batch: list[Row]) -> None:
        """Write one batch, retrying with back-off; count it as dropped if every attempt fails."""
        assert self._engine is not None
        for attempt in range(1, self.max_attempts + 1):
            try:
                write_predictions(self._engine, batch)
            except Exception as exc:  # noqa: BLE001 - any database error: retry, then report
                self._add(failed_attempts=1)
                if attempt == self.max_attempts:
                    self._add(dropped_write_failed=len(batch))
                    logger.error("prediction log: dropped a batch of %d rows after %d failed "
                                 "writes: %s", len(batch), attempt, _first_line(exc))
                    return
                time.sleep(self.retry_delay * 2 ** (attempt - 1))
            else:
                self._add(written=len(batch), batches=1)
                return


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
