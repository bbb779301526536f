"""The crash journal: what a serving worker answered for, on disk, until it is in the database.

The prediction log is written in batches by a background thread per worker
(:mod:`level4_deployment.log_writer`), so a worker that dies without a graceful exit — SIGKILL,
the OOM killer, a segfault — would take the rows it had queued but already answered 2xx for
with it. The journal closes that gap:

- on the request path, before the response is returned, the worker appends one line per served
  record to its own append-only file (a buffered write and a flush: one ``write(2)``, about a
  microsecond or two, no ``fsync``: the line survives the death of the process, not a power
  cut);
- each time the writer thread takes the queue to write it, it *rotates* the journal (the lines
  of exactly the rows it took become a closed segment; new lines go to a new file), and once
  every batch of that segment is committed it deletes the segment. A segment with a batch that
  could not be written (database down) is kept as ``*.unwritten.jsonl``;
- :func:`recover_journals` writes the rows of journals nobody will commit any more — those of
  dead workers, and unwritten segments — that are not in the database yet, then deletes them.
  It is idempotent by ``request_id`` (a request whose rows are all in the database is skipped;
  one cut between two batches gets only its missing rows), and several recoverers at once are
  safe: each claims a file by renaming it first. Each serving worker runs it when it starts
  (so the worker gunicorn forks in place of a killed one recovers its journal), and
  ``mlops-levels level4 log --recover`` runs it by hand.

Files, in ``$WORKBOOK_HOME/level4/journal/``: ``<pid>-<start>.<seq>.jsonl`` where ``start`` is
the process' start time (so a reused pid is not taken for the old process),
``….unwritten.jsonl`` for a kept segment, ``….recovering-<pid>-<start>.jsonl`` while a recoverer
works on it, ``….corrupt.jsonl`` for a file with unreadable lines (left for a person: the check
lists it). A line is one served record as JSON: ``[request_id, time, variant, model_version,
pickups, dropoffs, distances, ride_ids or null, minutes]``. A last line without its newline is
the record being written when the process died — its response was never sent — and is ignored.

Recovered rows carry no shadow predictions (those are made on the writer thread, after the
response); the served prediction, version and time are the ones the client got.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np
from sqlalchemy import Engine, func, select

from taxi_common.settings import Settings

logger = logging.getLogger(__name__)

JOURNAL_SUBDIR = ("level4", "journal")
_NAME = re.compile(r"^(?P<pid>\d+)-(?P<start>\d+)\.(?P<seq>\d+)"
                   r"(?:\.(?P<state>unwritten|corrupt|recovering-(?P<rpid>\d+)-(?P<rstart>\d+)))?"
                   r"\.jsonl$")
_encode = msgspec.json.Encoder().encode
#: A journal line: request_id, time, variant, version, pickups, dropoffs, miles, ride ids, minutes
Line = tuple[str, float, str, str, list[int], list[int], list[float], list[str | None] | None,
             list[float]]
_decoder = msgspec.json.Decoder(Line)


def journal_dir(settings: Settings) -> Path:
    """Where the serving workers keep their journals: ``$WORKBOOK_HOME/level4/journal``."""
    return settings.workbook_home.joinpath(*JOURNAL_SUBDIR)


# --- processes -------------------------------------------------------------------------------

def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in hundredths of a second since the epoch (stable across
    calls and processes); None when it does not run (a zombie counts as gone)."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return round(process.create_time() * 100)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_running(pid: int, start: int) -> bool:
    """True when ``pid`` runs and is the process that started at ``start`` (not a reused pid)."""
    now = process_start(pid)
    return now is not None and abs(now - start) <= 1


# --- the line format ------------------------------------------------------------------------

def record_line(record: Any) -> bytes:
    """One served ``PredictionRecord`` as a journal line (JSON, newline-terminated)."""
    rides = record.rides
    ids = None if rides.ride_ids is None else list(rides.ride_ids)
    return _encode((record.request_id, record.time, record.variant, record.model_version,
                    rides.pickup.tolist(), rides.dropoff.tolist(), rides.distance.tolist(),
                    ids, record.minutes.tolist())) + b"\n"


def line_record(line: bytes) -> Any:
    """The ``PredictionRecord`` a journal line holds (``msgspec.ValidationError`` or
    ``DecodeError`` when the line is not one)."""
    from level2_devops.service.rides import RideBatch
    from level2_devops.service.sink import PredictionRecord

    request_id, at, variant, version, pu, do, miles, ids, minutes = _decoder.decode(line)
    if not len(pu) == len(do) == len(miles) == len(minutes) or (ids is not None
                                                                and len(ids) != len(pu)):
        raise msgspec.ValidationError("the ride lists of the line differ in length")
    rides = RideBatch(np.asarray(pu, np.int64), np.asarray(do, np.int64),
                      np.asarray(miles, np.float64), ids)
    return PredictionRecord(request_id, at, rides, variant, version,
                            np.asarray(minutes, np.float64))


@dataclass
class JournalContents:
    """What one journal file holds: its records, and the lines that were not records."""

    records: list[Any] = field(default_factory=list)
    partial_last_line: bool = False  # the process died while writing it: no response was sent
    corrupt_lines: int = 0  # unreadable lines before the last one: something else is wrong

    @property
    def rows(self) -> int:
        """Prediction-log rows of the records (one per ride)."""
        return sum(len(r.minutes) for r in self.records)


def read_journal(path: Path) -> JournalContents:
    """The records of a journal file; a cut last line is tolerated, other bad lines counted."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    out = JournalContents(partial_last_line=bool(tail))
    for line in lines:
        if not line:
            continue
        try:
            out.records.append(line_record(line))
        except (msgspec.DecodeError, msgspec.ValidationError):
            out.corrupt_lines += 1
    return out


# --- the writing side (one per serving worker) ----------------------------------------------

class CrashJournal:
    """A worker's journal: :meth:`append` on the request path, :meth:`rotate`,
    :meth:`committed` and :meth:`unwritten` on the log writer's thread (see the module doc).

    Create it anywhere; :meth:`start` in the serving process (after the fork). The caller
    serialises ``append`` and ``rotate`` (the log writer holds one lock around "append to the
    journal, append to the queue" and around "rotate, take the queue").
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._pid: int | None = None
        self._prefix = ""
        self._seq = 0
        self._lines = 0  # lines in the open file

    @property
    def path(self) -> Path | None:
        """The file being appended to (None before :meth:`start`)."""
        return self._path

    def start(self) -> CrashJournal:
        """Start this process' journal (again in a forked child: the parent's stays its own)."""
        pid = os.getpid()
        if self._pid == pid and self._file is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        start = process_start(pid)
        self._pid, self._prefix, self._seq = pid, f"{pid}-{start}", 0
        self._file = None  # a parent's file object is not closed here: it is the parent's
        self._open_next()
        return self

    def _open_next(self) -> None:
        self._seq += 1
        self._path = self.directory / f"{self._prefix}.{self._seq}.jsonl"
        self._file = self._path.open("ab")
        self._lines = 0

    def append(self, line: bytes) -> None:
        """Append one line and hand it to the kernel (no fsync)."""
        assert self._file is not None, "CrashJournal.start() first"
        self._file.write(line)
        self._file.flush()
        self._lines += 1

    def rotate(self) -> Path | None:
        """Close the current file and start the next one; the closed segment's path, or None
        when it held no lines (it is then kept open)."""
        if self._file is None or self._lines == 0:
            return None
        closed = self._path
        self._file.close()
        self._open_next()
        return closed

    @staticmethod
    def committed(segment: Path | None) -> None:
        """Every row of ``segment`` is in the database: delete it."""
        if segment is not None:
            segment.unlink(missing_ok=True)

    @staticmethod
    def unwritten(segment: Path | None) -> Path | None:
        """Some rows of ``segment`` could not be written: keep it for :func:`recover_journals`."""
        if segment is None:
            return None
        kept = segment.with_name(segment.name.removesuffix(".jsonl") + ".unwritten.jsonl")
        segment.rename(kept)
        return kept

    def close(self) -> None:
        """Close the file; delete it when it is empty (everything in it was committed)."""
        if self._file is None or self._pid != os.getpid():
            return
        self._file.close()
        self._file = None
        if self._lines == 0 and self._path is not None:
            self._path.unlink(missing_ok=True)


# --- reading side: list, check, recover -----------------------------------------------------

@dataclass(frozen=True)
class JournalFile:
    """A journal file and whose it is."""

    path: Path
    pid: int
    start: int
    state: str  # "active" (a worker's current or pending segment), "unwritten", "corrupt",
    # "recovering"
    recoverer: tuple[int, int] | None = None

    @property
    def stem(self) -> str:
        """``<pid>-<start>.<seq>``: the segment, whatever its state."""
        return ".".join(self.path.name.split(".")[:2])

    @classmethod
    def parse(cls, path: Path) -> JournalFile | None:
        """The file's owner and state from its name; None for a file that is not a journal."""
        match = _NAME.match(path.name)
        if match is None:
            return None
        state = match["state"] or "active"
        recoverer = None
        if state.startswith("recovering"):
            state, recoverer = "recovering", (int(match["rpid"]), int(match["rstart"]))
        return cls(path, int(match["pid"]), int(match["start"]), state, recoverer)

    @property
    def owner_alive(self) -> bool:
        """Whether the worker that wrote it still runs."""
        return is_running(self.pid, self.start)

    def needs_recovery(self, me: tuple[int, int | None]) -> bool:
        """True when nobody else will write its rows: its worker is dead, or it is an unwritten
        segment (whoever's: its writer never reads it again), or its recoverer died."""
        if self.state == "corrupt":
            return False
        if self.state == "recovering":
            assert self.recoverer is not None
            return self.recoverer != me and not is_running(*self.recoverer)
        return self.state == "unwritten" or not self.owner_alive


def journal_files(directory: Path) -> list[JournalFile]:
    """Every journal file in ``directory``, oldest segment first (none when it is absent)."""
    if not directory.is_dir():
        return []
    found = (JournalFile.parse(p) for p in directory.iterdir())
    return sorted((f for f in found if f is not None),
                  key=lambda f: (f.start, f.pid, int(f.stem.split(".")[1])))


def _me() -> tuple[int, int | None]:
    pid = os.getpid()
    return pid, process_start(pid)


def _present_rows(engine: Engine, records: list[Any]) -> dict[str, int]:
    """Rows already in the prediction log per request id of ``records`` (looked up in the
    records' time window, on the ``logged_at`` index)."""
    from level4_deployment.store import _utc_from_unix, predictions

    if not records:
        return {}
    times = [r.time for r in records]
    lo, hi = _utc_from_unix(min(times) - 2.0), _utc_from_unix(max(times) + 2.0)
    wanted = {r.request_id for r in records}
    query = (select(predictions.c.request_id, func.count())
             .where(predictions.c.logged_at.between(lo, hi))
             .group_by(predictions.c.request_id))
    with engine.connect() as conn:
        return {rid: int(n) for rid, n in conn.execute(query) if rid in wanted}


def missing_rows(engine: Engine, records: list[Any]) -> list[tuple[Any, ...]]:
    """The rows of ``records`` that the prediction log lacks: all rows of a request it does not
    hold, the last ones of a request cut between two batches (batches keep the rows' order)."""
    from level4_deployment.serving import record_rows

    present = _present_rows(engine, records)
    out: list[tuple[Any, ...]] = []
    for record in records:
        rows = record_rows(record)
        out.extend(rows[present.get(record.request_id, 0):])
    return out


@dataclass
class JournalReport:
    """One journal file as ``log --check`` and ``log --recover`` report it."""

    file: str
    pid: int
    state: str
    owner_alive: bool
    records: int
    rows: int
    missing_rows: int | None = None  # rows not in the database (None: not looked up)
    partial_last_line: bool = False
    corrupt_lines: int = 0
    recovered_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The report as a plain dict (JSON)."""
        return asdict(self)


def inspect_journals(directory: Path, engine: Engine | None = None) -> list[JournalReport]:
    """Every journal file with its owner, state and row counts (and the rows the database
    lacks, with ``engine``); changes nothing."""
    out = []
    for jf in journal_files(directory):
        try:
            contents = read_journal(jf.path)
        except FileNotFoundError:  # committed or claimed meanwhile
            continue
        alive = jf.owner_alive
        missing = None
        if engine is not None and (not alive or jf.state != "active"):
            missing = len(missing_rows(engine, contents.records))
        out.append(JournalReport(jf.path.name, jf.pid, jf.state, alive, len(contents.records),
                                 contents.rows, missing, contents.partial_last_line,
                                 contents.corrupt_lines))
    return out


def _claim(jf: JournalFile, me: tuple[int, int | None]) -> Path | None:
    """Rename ``jf`` to this process' ``recovering`` name; None when another process was first."""
    claimed = jf.path.with_name(f"{jf.stem}.recovering-{me[0]}-{me[1] or 0}.jsonl")
    try:
        jf.path.rename(claimed)
    except FileNotFoundError:
        return None
    return claimed


def recover_journals(engine: Engine, directory: Path) -> list[JournalReport]:
    """Write the rows of every journal that needs recovery (dead workers', unwritten segments,
    dead recoverers') that the database lacks, then delete the file; a file with corrupt lines
    is renamed ``*.corrupt.jsonl`` after its good lines are written. Idempotent; safe to run in
    several processes at once. Returns what was done, file by file."""
    from level4_deployment.store import write_prediction_tuples

    me = _me()
    done = []
    for jf in journal_files(directory):
        if not jf.needs_recovery(me):
            continue
        claimed = _claim(jf, me)
        if claimed is None:
            continue
        contents = read_journal(claimed)
        rows = missing_rows(engine, contents.records)
        for start in range(0, len(rows), 2000):
            write_prediction_tuples(engine, rows[start:start + 2000])
        if contents.corrupt_lines:
            claimed.rename(claimed.with_name(f"{jf.stem}.corrupt.jsonl"))
            logger.error("journal %s: %d unreadable lines; the file is kept as *.corrupt.jsonl",
                         jf.path.name, contents.corrupt_lines)
        else:
            claimed.unlink()
        done.append(JournalReport(jf.path.name, jf.pid, jf.state, False, len(contents.records),
                                  contents.rows, len(rows), contents.partial_last_line,
                                  contents.corrupt_lines, recovered_rows=len(rows)))
        if rows:
            logger.warning("recovered %d prediction-log rows from journal %s", len(rows),
                           jf.path.name)
    return done


def recover_in_background(engine: Engine, directory: Path) -> threading.Thread:
    """:func:`recover_journals` on a daemon thread (a worker that starts); errors are logged."""
    def run() -> None:
        try:
            recover_journals(engine, directory)
        except Exception as exc:  # noqa: BLE001 - the next start, or `log --recover`, retries
            text = str(exc).strip().splitlines()
            logger.error("prediction log journal: recovering dead workers' journals failed "
                         "(%s); `mlops-levels level4 log --recover` retries it",
                         text[0] if text else type(exc).__name__)

    thread = threading.Thread(target=run, name="journal-recovery", daemon=True)
    thread.start()
    return thread


