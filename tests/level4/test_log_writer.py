"""PredictionLogWriter: batches off the request path, a graceful close, nothing lost silently."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select

from level4_deployment import store
from level4_deployment.log_writer import PredictionLogWriter
from taxi_common.settings import Settings

from .test_store import prediction


def logged_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(store.predictions)).scalar_one()


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_close_writes_everything_in_batches(engine: Engine) -> None:
    writer = PredictionLogWriter(lambda: engine, batch_size=100, flush_interval=0.2).start()
    for i in range(1234):
        assert writer.submit(prediction(i))
    stats = writer.close()
    assert logged_rows(engine) == 1234
    assert (stats.submitted, stats.written, stats.dropped) == (1234, 1234, 0)
    assert 13 <= stats.batches < 1234


def test_a_few_rows_are_written_after_the_flush_interval(sqlite_engine: Engine) -> None:
    writer = PredictionLogWriter(lambda: sqlite_engine, batch_size=500, flush_interval=0.2)
    with writer:
        writer.submit_many([prediction(i) for i in range(3)])
        assert wait_for(lambda: logged_rows(sqlite_engine) == 3)
        assert writer.stats.batches == 1  # the three rows went in one batch, before close
        assert writer.flush()


def test_rows_submitted_before_start_are_kept(sqlite_engine: Engine) -> None:
    writer = PredictionLogWriter(lambda: sqlite_engine)  # e.g. created before gunicorn forks
    writer.submit(prediction(0))
    writer.start()
    assert writer.flush(timeout=5) and logged_rows(sqlite_engine) == 1
    writer.close()


def test_close_without_start_still_writes_queued_rows(sqlite_engine: Engine) -> None:
    writer = PredictionLogWriter(lambda: sqlite_engine)
    writer.submit_many([prediction(i) for i in range(4)])
    assert writer.close().written == 4 and logged_rows(sqlite_engine) == 4


def test_a_full_queue_drops_and_counts(sqlite_engine: Engine,
                                       caplog: pytest.LogCaptureFixture) -> None:
    writer = PredictionLogWriter(lambda: sqlite_engine, max_queue=10)  # not started: fills up
    with caplog.at_level(logging.ERROR, logger="level4_deployment.log_writer"):
        assert writer.submit_many([prediction(i) for i in range(25)]) == 10
    assert writer.stats.dropped_queue_full == 15 and writer.stats.queued == 10
    assert "queue full: dropped 15 rows" in caplog.text
    stats = writer.close()
    assert (stats.submitted, stats.written, stats.dropped) == (25, 10, 15)


def test_rows_after_close_are_counted_as_dropped(sqlite_engine: Engine) -> None:
    writer = PredictionLogWriter(lambda: sqlite_engine).start()
    writer.close()
    assert not writer.submit(prediction(0))
    assert writer.stats.dropped_closed == 1


def test_a_database_that_stays_down_is_reported_not_silent(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "no-such-folder" / "level4.db"  # SQLite cannot create it
    writer = PredictionLogWriter(lambda: create_engine(f"sqlite:///{missing}"), batch_size=50,
                                 max_attempts=3, retry_delay=0.01).start()
    with caplog.at_level(logging.ERROR, logger="level4_deployment.log_writer"):
        writer.submit_many([prediction(i) for i in range(120)])
        stats = writer.close()
    assert stats.written == 0 and stats.dropped_write_failed == 120
    assert stats.failed_attempts == 3 * 3  # three batches of at most 50, three attempts each
    assert "dropped a batch of 50 rows after 3 failed writes" in caplog.text


def test_a_failed_batch_is_retried_until_the_database_is_back(tmp_path: Path) -> None:
    engine = store.engine_for(Settings(workbook_home=tmp_path))  # no tables yet: writes fail
    writer = PredictionLogWriter(lambda: engine, max_attempts=5, retry_delay=1.0).start()
    writer.submit_many([prediction(i) for i in range(7)])
    assert wait_for(lambda: writer.stats.failed_attempts >= 1)
    store.create_tables(engine)  # the database "comes back" before the retry
    stats = writer.close()
    assert (stats.written, stats.dropped) == (7, 0) and logged_rows(engine) == 7
    assert 1 <= stats.failed_attempts < 5


def test_for_settings_creates_the_tables_on_start(tmp_path: Path) -> None:
    settings = Settings(workbook_home=tmp_path / "home")
    writer = PredictionLogWriter.for_settings(settings, flush_interval=0.1)
    assert not (tmp_path / "home").exists()  # nothing happens before start
    with writer:
        writer.submit(prediction(0))
    engine = store.engine_for(settings)
    assert logged_rows(engine) == 1
    assert writer.stats.as_dict()["dropped"] == 0


def _serve_in_child(writer: PredictionLogWriter) -> None:
    writer.start()  # what a gunicorn worker does in post_fork
    writer.submit(prediction(1))
    stats = writer.close()
    os._exit(0 if (stats.submitted, stats.written) == (1, 1) else 1)


def test_created_before_a_fork_started_after_it(tmp_path: Path) -> None:
    settings = Settings(workbook_home=tmp_path / "home")
    writer = PredictionLogWriter.for_settings(settings, flush_interval=0.1)
    writer.submit(prediction(0))  # queued in the parent before the fork
    child = multiprocessing.get_context("fork").Process(target=_serve_in_child, args=(writer,))
    child.start()
    child.join(30)
    assert child.exitcode == 0  # the child wrote its own row only, not a copy of the parent's
    engine = store.engine_for(settings)
    assert logged_rows(engine) == 1
    assert writer.close().written == 1  # the parent writes the row it queued
    assert logged_rows(engine) == 2


def _built(start: int, n: int) -> list[tuple[object, ...]]:
    """Rows of a deferred item, built on the writer's thread (``logged_at`` in Unix seconds)."""
    return [store.prediction_tuple(prediction(start + i))[:1] + (1_614_931_200.0 + i,)
            + store.prediction_tuple(prediction(start + i))[2:] for i in range(n)]


def test_deferred_items_are_built_and_written_and_flush_waits_for_them(
        sqlite_engine: Engine) -> None:
    writer = PredictionLogWriter(lambda: sqlite_engine, flush_interval=30.0).start()
    assert writer.submit_deferred(3, _built, 0, 3) and writer.submit(prediction(10))
    assert writer.stats.queued == 4  # nothing is written before the (long) interval...
    assert writer.flush(timeout=5)  # ...unless a flush asks for it
    assert logged_rows(sqlite_engine) == 4
    stats = writer.close()
    assert (stats.submitted, stats.written, stats.batches, stats.dropped) == (4, 4, 1, 0)


def test_a_deferred_item_that_fails_to_build_is_counted(
        sqlite_engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> list[tuple[object, ...]]:
        raise ValueError("no rows here")

    writer = PredictionLogWriter(lambda: sqlite_engine).start()
    with caplog.at_level(logging.ERROR, logger="level4_deployment.log_writer"):
        writer.submit_deferred(2, broken)
        writer.submit_deferred(1, _built, 5, 1)
        stats = writer.close()
    assert (stats.submitted, stats.written, stats.dropped_write_failed) == (3, 1, 2)
    assert "dropped 2 rows that could not be built: no rows here" in caplog.text
    assert logged_rows(sqlite_engine) == 1


def test_a_deferred_item_larger_than_the_room_left_is_dropped_whole(
        sqlite_engine: Engine) -> None:
    writer = PredictionLogWriter(lambda: sqlite_engine, max_queue=5)
    assert writer.submit_deferred(4, _built, 0, 4)
    assert not writer.submit_deferred(2, _built, 4, 2)
    assert (writer.stats.queued, writer.stats.dropped_queue_full) == (4, 2)
    assert writer.close().written == 4
