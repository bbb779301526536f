"""The crash journal: a real process killed with SIGKILL mid-write loses no acknowledged row,
a cut last line is tolerated, recovery is idempotent by request id, and ``log --check`` says
what is wrong."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, func, select, text
from typer.testing import CliRunner

from level2_devops.service.rides import RideBatch
from level2_devops.service.sink import PredictionRecord
from level4_deployment import journal, store
from level4_deployment.cli import app
from level4_deployment.log_writer import PredictionLogWriter
from level4_deployment.serving import record_rows
from taxi_common.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def record(i: int, rides: int = 1, at: float | None = None) -> PredictionRecord:
    """A served record of ``rides`` rides (request ``req-<i>``), served now or at ``at``."""
    n = np.arange(rides)
    batch = RideBatch((74 + n) % 265 + 1, np.full(rides, 75), 1.5 + n * 0.25,
                      [f"ride-{i}-{k}" for k in range(rides)])
    return PredictionRecord(f"req-{i}", at if at is not None else time.time(), batch,
                            "champion", "3", 10.0 + n / 3)


def rows_in(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(store.predictions)).scalar_one()


def write_journal(path: Path, records: list[PredictionRecord], tail: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(journal.record_line(r) for r in records) + tail)
    return path


def dead_owner() -> tuple[int, int]:
    """The pid and start time of a process that has exited (its journal is a dead worker's)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = journal.process_start(child.pid)
    child.wait()
    return child.pid, start or 1


def test_a_line_holds_the_record_and_gives_the_writer_s_rows() -> None:
    original = record(1, rides=3)
    back = journal.line_record(journal.record_line(original))
    assert back.request_id == "req-1" and back.time == original.time
    assert record_rows(back) == record_rows(original)  # floats round-trip exactly


def test_a_cut_last_line_is_tolerated_and_a_bad_one_in_the_middle_counted(tmp_path: Path
                                                                           ) -> None:
    line = journal.record_line(record(9, rides=2))
    path = write_journal(tmp_path / "1-1.1.jsonl", [record(1), record(2)], tail=line[:17])
    contents = journal.read_journal(path)
    assert [r.request_id for r in contents.records] == ["req-1", "req-2"]
    assert contents.partial_last_line and contents.corrupt_lines == 0
    path.write_bytes(journal.record_line(record(1)) + b'["not", "a record"]\n'
                     + journal.record_line(record(2)))
    contents = journal.read_journal(path)
    assert len(contents.records) == 2 and contents.corrupt_lines == 1
    assert not contents.partial_last_line


def rides_of(i: int) -> int:
    """Rides of the child's request ``i``: 1 to 361 (lines of up to 13 kB, more than the file's
    8 kB buffer, so that a line may be cut by the kill)."""
    return 1 + (i % 7) * 60


#: A child that serves "requests" through a journalled writer that commits every 0.2 s, and
#: prints each request's number once submit returned (once it would have answered 2xx).
CHILD = """
import sys, time
from pathlib import Path
from level4_deployment.journal import record_line
from level4_deployment.log_writer import PredictionLogWriter
from level4_deployment.serving import record_rows
from taxi_common.settings import Settings
from tests.level4.test_journal import record, rides_of

writer = PredictionLogWriter.for_settings(Settings(workbook_home=Path(sys.argv[1])),
                                          journal=True, flush_interval=0.2).start()
for i in range(10**9):
    rec = record(i, rides=rides_of(i))
    if writer.submit_deferred(len(rec.minutes), record_rows, rec, journal_line=record_line(rec)):
        print(i, flush=True)
    time.sleep(0.001)
"""


def test_sigkill_mid_write_loses_no_acknowledged_row(tmp_path: Path) -> None:
    home = tmp_path / "workbook"
    settings = Settings(workbook_home=home)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(home)], stdout=subprocess.PIPE,
                             env=env, cwd=REPO_ROOT, text=True)
    assert child.stdout is not None
    acknowledged = []
    try:
        for line in child.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) == 600:  # several commits and rotations have happened
                child.send_signal(signal.SIGKILL)
                break
        acknowledged += [int(line) for line in child.stdout]  # what it printed before dying
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    engine = store.engine_for(settings)
    committed = rows_in(engine)
    files = journal.journal_files(journal.journal_dir(settings))
    assert files and all(not f.owner_alive for f in files)
    want = sum(rides_of(i) for i in acknowledged)
    assert committed < want  # the kill did catch rows that were answered but not written

    report = journal.inspect_journals(journal.journal_dir(settings), engine)
    assert sum(r.corrupt_lines for r in report) == 0
    done = journal.recover_journals(engine, journal.journal_dir(settings))
    assert sum(r.recovered_rows for r in done) == sum(r.missing_rows or 0 for r in report)
    assert not journal.journal_files(journal.journal_dir(settings))
    with engine.connect() as conn:
        logged = set(conn.execute(select(store.predictions.c.request_id).distinct()).scalars())
    assert {f"req-{i}" for i in acknowledged} <= logged  # every acknowledged request is logged
    assert len(logged) <= len(acknowledged) + 1  # at most the one being submitted at the kill
    assert rows_in(engine) >= want
    found = store.check_predictions(engine)
    assert found["duplicate_rows"] == 0 and not found["invalid_rows"]
    assert journal.recover_journals(engine, journal.journal_dir(settings)) == []
    engine.dispose()


def test_recovery_is_idempotent_by_request_id(tmp_path: Path, sqlite_engine: Engine) -> None:
    directory = tmp_path / "journal"
    pid, start = dead_owner()
    records = [record(1, rides=5), record(2, rides=3), record(3)]
    store.write_prediction_tuples(sqlite_engine, record_rows(records[0])[:2])  # cut batch
    store.write_prediction_tuples(sqlite_engine, record_rows(records[1]))  # all committed
    write_journal(directory / f"{pid}-{start}.1.jsonl", records[:2])
    write_journal(directory / f"{pid}-{start}.2.jsonl", records[2:], tail=b'["req-4", 1')
    report = journal.inspect_journals(directory, sqlite_engine)
    assert [(r.rows, r.missing_rows, r.owner_alive) for r in report] == [(8, 3, False),
                                                                         (1, 1, False)]
    assert report[1].partial_last_line
    done = journal.recover_journals(sqlite_engine, directory)
    assert [r.recovered_rows for r in done] == [3, 1]
    assert rows_in(sqlite_engine) == 5 + 3 + 1
    assert store.check_predictions(sqlite_engine)["duplicate_rows"] == 0
    write_journal(directory / f"{pid}-{start}.1.jsonl", records)  # the same rows again
    assert [r.recovered_rows for r in journal.recover_journals(sqlite_engine, directory)] == [0]
    assert rows_in(sqlite_engine) == 9 and not any(directory.iterdir())


def test_live_workers_journals_are_left_alone_unless_unwritten(tmp_path: Path,
                                                               sqlite_engine: Engine) -> None:
    directory = tmp_path / "journal"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = journal.process_start(sleeper.pid)
        active = write_journal(directory / f"{sleeper.pid}-{start}.3.jsonl", [record(1)])
        kept = write_journal(directory / f"{sleeper.pid}-{start}.2.unwritten.jsonl",
                             [record(2, rides=4)])
        reused = write_journal(directory / f"{sleeper.pid}-{start - 500}.1.jsonl", [record(3)])
        done = journal.recover_journals(sqlite_engine, directory)
        assert sorted(r.file for r in done) == sorted([kept.name, reused.name])  # reused pid
        assert active.exists() and not kept.exists() and rows_in(sqlite_engine) == 5
    finally:
        sleeper.kill()
        sleeper.wait()
    assert [r.recovered_rows for r in journal.recover_journals(sqlite_engine, directory)] == [1]


def test_concurrent_recoverers_write_each_row_once(tmp_path: Path, sqlite_engine: Engine
                                                   ) -> None:
    directory = tmp_path / "journal"
    pid, start = dead_owner()
    for seq in range(1, 9):
        write_journal(directory / f"{pid}-{start}.{seq}.jsonl",
                      [record(seq * 100 + k, rides=20) for k in range(20)])
    threads = [threading.Thread(target=journal.recover_journals, args=(sqlite_engine, directory))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert rows_in(sqlite_engine) == 8 * 20 * 20
    assert store.check_predictions(sqlite_engine)["duplicate_rows"] == 0


def test_writer_deletes_committed_segments_and_keeps_unwritten_ones(tmp_path: Path) -> None:
    settings = Settings(workbook_home=tmp_path / "workbook")
    directory = journal.journal_dir(settings)
    writer = PredictionLogWriter.for_settings(settings, journal=True, flush_interval=0.1,
                                              max_attempts=1).start()
    for i in range(50):
        rec = record(i)
        writer.submit_deferred(1, record_rows, rec, journal_line=journal.record_line(rec))
    assert writer.flush()
    [only] = journal.journal_files(directory)  # the committed segment is gone
    assert only.path == writer.journal.path and only.path.stat().st_size == 0
    engine = store.engine_for(settings)
    with engine.begin() as conn:  # the database breaks: the next batch cannot be written
        conn.execute(text("ALTER TABLE predictions RENAME TO predictions_away"))
    rec = record(99, rides=3)
    writer.submit_deferred(3, record_rows, rec, journal_line=journal.record_line(rec))
    assert writer.flush()
    assert writer.stats.dropped_write_failed == 3
    [kept] = [f for f in journal.journal_files(directory) if f.state == "unwritten"]
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE predictions_away RENAME TO predictions"))
    assert [r.recovered_rows for r in journal.recover_journals(engine, directory)] == [3]
    writer.close()
    assert rows_in(engine) == 53 and not journal.journal_files(directory)
    engine.dispose()


def test_log_check_and_recover_commands(tmp_path: Path) -> None:
    settings = Settings(workbook_home=tmp_path / "workbook")
    engine = store.engine_for(settings)
    store.create_tables(engine)
    pid, start = dead_owner()
    write_journal(journal.journal_dir(settings) / f"{pid}-{start}.1.jsonl",
                  [record(1, rides=2), record(2)])
    store.write_prediction_tuples(engine, record_rows(record(3)))
    runner = CliRunner()
    env = {"WORKBOOK_HOME": str(settings.workbook_home), "DATABASE_URL": ""}

    def run(*args: str) -> Any:
        return runner.invoke(app, ["log", *args], env=env)

    checked = run("--check")
    assert checked.exit_code == 1, checked.output
    assert "holds 3 rows the log lacks" in checked.output and "log --recover" in checked.output
    recovered = run("--recover", "--check", "--json")
    assert recovered.exit_code == 0, recovered.output
    out = json.loads(recovered.output)
    assert out["recovered"]["rows"] == 3 and out["ok"] and out["journals"] == []
    assert out["check"]["rows"] == 4 and out["check"]["request_ids"] == 3

    store.write_prediction_tuples(engine, record_rows(record(3)))  # written twice
    with engine.begin() as conn:
        conn.execute(text("UPDATE predictions SET PULocationID = 999 WHERE request_id = 'req-1'"))
    bad = run("--check", "--json")
    assert bad.exit_code == 1
    problems = json.loads(bad.output)["problems"]
    assert problems == ["1 duplicate rows (1 rides of a request logged more than once)",
                        "2 rows with zone out of range"]
    engine.dispose()


@pytest.mark.postgres
def test_recovery_on_postgresql(tmp_path: Path, pg_schema: str) -> None:
    from tests.level4.conftest import PG_URL

    settings = Settings(workbook_home=tmp_path / "workbook", database_url=PG_URL)
    engine = store.engine_for(settings, schema=pg_schema)
    store.create_tables(engine)
    directory = tmp_path / "journal"
    pid, start = dead_owner()
    records = [record(1, rides=4), record(2)]
    store.write_prediction_tuples(engine, record_rows(records[0])[:1])
    write_journal(directory / f"{pid}-{start}.1.jsonl", records)
    assert [r.recovered_rows for r in journal.recover_journals(engine, directory)] == [4]
    assert rows_in(engine) == 5
    write_journal(directory / f"{pid}-{start}.1.jsonl", records)
    assert [r.recovered_rows for r in journal.recover_journals(engine, directory)] == [0]
    assert store.check_predictions(engine)["duplicate_rows"] == 0
    engine.dispose()
