"""``PredictionLogWriter``: writes the prediction log off the request path, in batches.

The request path only appends to a ``collections.deque`` (atomic under the GIL: no lock, no
condition variable, no wake-up of another thread per request; with a crash journal, one
uncontended lock, see below). What it appends is cheap to make: either rows already built
(:meth:`PredictionLogWriter.submit`, :meth:`~PredictionLogWriter.submit_many`) or a *deferred*
item (:meth:`~PredictionLogWriter.submit_deferred`): a function and its arguments that the
writer thread calls to build the rows — level 4's sink hands over the served record as it is,
and the tuples, timestamps and shadow predictions are made on the writer's thread.

A background thread wakes every ``flush_interval`` seconds (sooner when ``batch_size`` rows are
waiting, when :meth:`~PredictionLogWriter.flush` asks, or on close), takes everything queued, and
writes it in transactions of at most ``batch_size`` rows, each one ``executemany`` of tuples
(:func:`~level4_deployment.store.write_prediction_tuples`).

Nothing is lost silently. A row that does not fit in the queue (``max_queue`` rows), a row whose
batch still fails after ``max_attempts`` writes (database down), or a deferred item whose rows
cannot be built, is counted in :attr:`stats` and reported on the ``level4_deployment.log_writer``
logger at ERROR level.

Processes and threads: create the writer anywhere, call :meth:`start` in the process that
serves (under gunicorn: in each worker, after the fork — a thread and a connection pool do
not survive ``fork``), and :meth:`close` on shutdown: it writes everything still queued.
A writer started in a forked child starts afresh (its own queue and counts): rows queued in the
parent before the fork are the parent's to write, not each worker's.

Several threads may submit at once (the deque append is atomic); the queue bound is then
approximate (its counter is not locked), the counts in :attr:`stats` stay exact.

Crash journal (``journal=``, :mod:`level4_deployment.journal`): rows queued but not yet written
die with a process that is killed. With a journal, a deferred item given a ``journal_line`` is
appended to the journal and to the queue under one lock (uncontended: the sync worker's request
thread, and the writer for a moment per round); each round rotates the journal as it takes the
queue under that lock, so a closed segment holds exactly the rows taken, and deletes the segment
once they are committed (keeps it as ``*.unwritten.jsonl`` when a batch was dropped). At start
a thread beside the writer's recovers the journals of dead workers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Engine

from level4_deployment.journal import CrashJournal, recover_in_background
from level4_deployment.store import (
    create_tables,
    engine_for,
    prediction_tuple,
    write_prediction_tuples,
)
from taxi_common.settings import Settings

logger = logging.getLogger(__name__)

Row = Mapping[str, Any]
#: Builds the rows of a deferred item: tuples in ``store.PREDICTION_COLUMNS`` order.
RowsBuilder = Callable[..., Sequence[tuple[Any, ...]]]
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
    journal_failures: int = 0  # journal lines or rotations that failed (the rows were queued)

    @property
    def dropped(self) -> int:
        """Rows that will never be written."""
        return self.dropped_queue_full + self.dropped_write_failed + self.dropped_closed

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (for JSON and metrics)."""
        return {**asdict(self), "dropped": self.dropped}


def _mapping_rows(rows: list[Row]) -> list[tuple[Any, ...]]:
    return [prediction_tuple(row) for row in rows]


class _Flushed:
    """A marker in the queue: set once every row queued before it is written or dropped."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()


class PredictionLogWriter:
    """A background thread that writes prediction-log rows in batches (see the module doc)."""

    def __init__(self, engine_factory: Callable[[], Engine], *, batch_size: int = 2000,
                 flush_interval: float = 0.5, max_queue: int = 10_000, max_attempts: int = 3,
                 retry_delay: float = 0.2, journal: CrashJournal | None = None) -> None:
        if batch_size < 1 or max_queue < 1 or max_attempts < 1 or flush_interval <= 0:
            raise ValueError("batch_size, max_queue and max_attempts must be >= 1 and "
                             "flush_interval > 0")
        self._engine_factory = engine_factory
        self.batch_size, self.flush_interval = batch_size, flush_interval
        self.max_attempts, self.retry_delay = max_attempts, retry_delay
        self._max_queue = max_queue
        self._thread: threading.Thread | None = None
        self._engine: Engine | None = None
        self._closed = False
        self.journal = journal
        self._fresh_state()

    def _fresh_state(self) -> None:
        """The queue, counts and events of this process (again in a forked child)."""
        # Items: (rows, builder, args) — a builder called with args on the writer's thread
        # gives the rows; or a _Flushed marker.
        self._pending: deque[Any] = deque()
        self._lock = threading.Lock()  # for the rare counts only (drops); never per request
        self._journal_lock = threading.Lock()  # journal + queue appends, rotation + take
        self._in_rows = 0  # rows appended (request path; only bounds the queue)
        self._taken = 0  # rows taken off the queue by the writer (writer thread only)
        self._counts = dict.fromkeys(
            ("written", "dropped_queue_full", "dropped_write_failed", "dropped_closed",
             "failed_attempts", "batches", "journal_failures"), 0)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._last_drop_log = -DROP_LOG_INTERVAL
        self._owner_pid = os.getpid()

    @classmethod
    def for_settings(cls, settings: Settings, *, journal: bool = False,
                     **options: Any) -> PredictionLogWriter:
        """A writer for the settings' database (tables created on :meth:`start`); with
        ``journal``, a crash journal under ``$WORKBOOK_HOME/level4/journal``."""
        from level4_deployment.journal import journal_dir

        def factory() -> Engine:
            engine = engine_for(settings)
            create_tables(engine)
            return engine

        crash_journal = CrashJournal(journal_dir(settings)) if journal else None
        return cls(factory, journal=crash_journal, **options)

    # --- the request path -------------------------------------------------------------------

    def submit(self, row: Row) -> bool:
        """Queue one row; False (and counted) when it had to be dropped. Never blocks."""
        return self.submit_many((row,)) == 1

    def submit_many(self, rows: Iterable[Row]) -> int:
        """Queue rows; return how many were accepted (the rest are counted as dropped)."""
        rows = list(rows)
        if not rows:
            return 0
        room = self._room(len(rows))
        if room > 0:
            self._append(rows[:room], _mapping_rows, (rows[:room],))
        return room

    def submit_deferred(self, n_rows: int, builder: RowsBuilder, *args: Any,
                        journal_line: bytes | None = None) -> bool:
        """Queue ``n_rows`` rows that ``builder(*args)`` makes later, on the writer's thread
        (tuples in ``store.PREDICTION_COLUMNS`` order; ``logged_at`` may be Unix seconds).
        ``args`` must not change afterwards. With a journal, ``journal_line`` (the same rows,
        see :func:`~level4_deployment.journal.record_line`) is appended to it first. False (and
        counted) when dropped. Never blocks on the database."""
        if self._room(n_rows, whole=True) < n_rows:
            return False
        if self.journal is None or journal_line is None:
            self._append(n_rows, builder, args)
            return True
        with self._journal_lock:
            try:
                self.journal.append(journal_line)
            except OSError as exc:  # disk full: the row is still queued, the journal is not
                self._journal_failed("append", exc)
            self._append(n_rows, builder, args)
        return True

    def _journal_failed(self, what: str, exc: BaseException) -> None:
        with self._lock:
            self._counts["journal_failures"] += 1
            due = self._counts["journal_failures"] == 1
        if due:  # once: the next failures are counted in the stats
            logger.error("prediction log journal: %s failed (%s); rows are still written, but "
                         "a crash may lose the queued ones", what, _first_line(exc))

    def _room(self, n: int, whole: bool = False) -> int:
        """How many of ``n`` rows may be queued now (``whole``: all or none); the rest are
        counted as dropped."""
        if self._closed:
            self._drop("dropped_closed", n)
            return 0
        room = max(min(n, self._max_queue - (self._in_rows - self._taken)), 0)
        if whole and room < n:
            room = 0
        if room < n:
            self._drop("dropped_queue_full", n - room)
        return room

    def _append(self, rows: Any, builder: RowsBuilder, args: tuple[Any, ...]) -> None:
        n = rows if isinstance(rows, int) else len(rows)
        self._in_rows += n
        self._pending.append((n, builder, args))
        if self._in_rows - self._taken >= self.batch_size and not self._wake.is_set():
            self._wake.set()

    def _drop(self, kind: str, n: int) -> None:
        with self._lock:
            self._counts[kind] += n
        if kind == "dropped_queue_full":
            self._report_full_queue(n)

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
            self._fresh_state()  # rows queued in the parent stay the parent's
        self._engine = self._engine_factory()
        if self.journal is not None:
            self.journal.start()
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer",
                                        daemon=True)
        self._thread.start()
        if self.journal is not None:  # beside the writer: a big journal must not stall it
            recover_in_background(self._engine, self.journal.directory)
        return self

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row queued so far is written or dropped; False on timeout."""
        marker = _Flushed()
        self._pending.append(marker)
        self._wake.set()
        return marker.event.wait(timeout)

    def close(self, timeout: float = 30.0) -> WriterStats:
        """Stop accepting rows, write everything queued, stop the thread; return the stats.

        Rows still queued when ``timeout`` runs out (a database that hangs) are counted as
        dropped and reported.
        """
        if self._thread is None and self._pending:
            self.start()  # rows queued before start: write them now
        self._closed = True
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("prediction log writer did not finish within %.0f s", timeout)
        left = self._drain_unwritten()
        if left:
            self._drop("dropped_write_failed", left)
            logger.error("prediction log writer closed with %d rows unwritten", left)
        if self._thread is None or not self._thread.is_alive():
            if self.journal is not None:
                self.journal.close()  # deleted when empty; rows left unwritten stay in it
            if self._engine is not None:
                self._engine.dispose()
        return self.stats

    def __enter__(self) -> PredictionLogWriter:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def stats(self) -> WriterStats:
        """The counts so far."""
        queued = sum(item[0] for item in self._pending.copy() if type(item) is tuple)
        with self._lock:
            counts = dict(self._counts)
        dropped_at_submit = counts["dropped_queue_full"] + counts["dropped_closed"]
        return WriterStats(**counts, submitted=self._taken + queued + dropped_at_submit,
                           queued=queued)

    # --- the writing thread -----------------------------------------------------------------

    def _add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                self._counts[name] += n

    def _take_all(self) -> list[Any]:
        """Everything queued now, oldest first (the writer's thread, or after it stopped)."""
        items, pop = [], self._pending.popleft
        try:
            while True:
                items.append(pop())
        except IndexError:
            pass
        self._taken += sum(item[0] for item in items if type(item) is tuple)
        return items

    def _drain_unwritten(self) -> int:
        """Empty the queue when no thread will write it any more; return how many rows."""
        if self._thread is not None and self._thread.is_alive():
            return 0
        items = self._take_all()
        for item in items:
            if type(item) is _Flushed:
                item.event.set()
        return sum(item[0] for item in items if type(item) is tuple)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stopping = self._stopping.is_set()
            self._write_queued()
            if stopping and not self._pending:
                return

    def _write_queued(self) -> None:
        """Take everything queued; write it in batches of at most ``batch_size`` rows; then
        release the flush markers taken with it."""
        segment, items = self._take_journalled()
        if not items:
            return
        rows: list[tuple[Any, ...]] = []
        markers = []
        failed = 0
        for item in items:
            if type(item) is _Flushed:
                markers.append(item)
                continue
            n, builder, args = item
            try:
                rows.extend(builder(*args))
            except Exception as exc:  # noqa: BLE001 - a bad item must not stop the writer
                self._add(dropped_write_failed=n)
                logger.error("prediction log: dropped %d rows that could not be built: %s", n,
                             _first_line(exc))
            if len(rows) >= self.batch_size:
                failed += not self._write(rows[:self.batch_size])
                del rows[:self.batch_size]
        for start in range(0, len(rows), self.batch_size):
            failed += not self._write(rows[start:start + self.batch_size])
        self._settle(segment, failed)
        for marker in markers:
            marker.event.set()

    def _take_journalled(self) -> tuple[Any, list[Any]]:
        """Everything queued now, and the journal segment that holds exactly its rows (None
        without a journal)."""
        if self.journal is None:
            return None, self._take_all()
        with self._journal_lock:
            items = self._take_all()
            try:
                return self.journal.rotate(), items
            except OSError as exc:
                self._journal_failed("rotating", exc)
                return None, items

    def _settle(self, segment: Any, failed_batches: int) -> None:
        """Delete the round's journal segment, or keep it when a batch was dropped."""
        if segment is None or self.journal is None:
            return
        try:
            if failed_batches:
                kept = self.journal.unwritten(segment)
                logger.error("prediction log: the rows of %d dropped batches are kept in %s; "
                             "`mlops-levels level4 log --recover` writes them", failed_batches,
                             kept)
            else:
                self.journal.committed(segment)
        except OSError as exc:
            self._journal_failed("settling a segment", exc)

    def _write(self, batch: list[tuple[Any, ...]]) -> bool:
        """Write one batch, retrying with back-off; count it as dropped if every attempt fails
        (False)."""
        assert self._engine is not None
        for attempt in range(1, self.max_attempts + 1):
            try:
                write_prediction_tuples(self._engine, batch)
            except Exception as exc:  # noqa: BLE001 - any database error: retry, then report
                self._add(failed_attempts=1)
                if attempt == self.max_attempts:
                    self._add(dropped_write_failed=len(batch))
                    logger.error("prediction log: dropped a batch of %d rows after %d failed "
                                 "writes: %s", len(batch), attempt, _first_line(exc))
                    return False
                time.sleep(self.retry_delay * 2 ** (attempt - 1))
            else:
                self._add(written=len(batch), batches=1)
                return True
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
