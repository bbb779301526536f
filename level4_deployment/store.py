"""The tables levels 4 and 5 share, in one database: SQLAlchemy Core, SQLite or PostgreSQL.

- ``predictions``: every prediction the service served (the prediction log);
- ``actuals``: the true durations, which arrive after the trips end;
- ``monitoring_metrics``: one row per day and metric (a re-run updates it: backfills are
  idempotent);
- ``alerts``: one row per day and metric whose threshold was breached.

The embedded default is ``sqlite:///$WORKBOOK_HOME/level4.db`` in WAL mode (readers never block
the writer); ``DATABASE_URL`` (``Settings.database_url``) selects PostgreSQL. Timestamps are
stored as naive UTC; days as dates.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from level2_devops.service.rides import MAX_RIDE_ID_LENGTH
from taxi_common.errors import BadInputError
from taxi_common.settings import Settings

DATABASE_FILE = "level4.db"
SQLITE_BUSY_TIMEOUT_MS = 10_000
_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only

metadata = MetaData()

predictions = Table(
    "predictions", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("logged_at", DateTime, nullable=False),
    Column("ride_id", String(MAX_RIDE_ID_LENGTH)),
    Column("PULocationID", Integer, nullable=False),
    Column("DOLocationID", Integer, nullable=False),
    Column("trip_distance", Float, nullable=False),
    Column("variant", String(16), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("prediction", Float, nullable=False),
    Column("shadow_version", String(64)),
    Column("shadow_prediction", Float),
    Index("ix_predictions_ride_id", "ride_id"),
    Index("ix_predictions_logged_at", "logged_at"),
)

actuals = Table(
    "actuals", metadata,
    Column("ride_id", String(MAX_RIDE_ID_LENGTH), primary_key=True),
    Column("pickup_datetime", DateTime, nullable=False),
    Column("dropoff_datetime", DateTime, nullable=False),
    Column("duration", Float, nullable=False),
    Column("recorded_at", DateTime, nullable=False),
    Index("ix_actuals_pickup_datetime", "pickup_datetime"),
)

monitoring_metrics = Table(
    "monitoring_metrics", metadata,
    Column("day", Date, primary_key=True),
    Column("metric", String(64), primary_key=True),
    Column("value", Float),
    Column("model_version", String(64)),
    Column("computed_at", DateTime, nullable=False),
)

alerts = Table(
    "alerts", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("day", Date, nullable=False),
    Column("metric", String(64), nullable=False),
    Column("value", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("message", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("day", "metric", name="uq_alerts_day_metric"),
)

PREDICTION_COLUMNS: tuple[str, ...] = tuple(c.name for c in predictions.columns if c.name != "id")
JOIN_WINDOWS = ("logged_at", "pickup")


def utc_now() -> dt.datetime:
    """The current time as naive UTC, the way the tables store it."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def as_naive_utc(value: dt.datetime) -> dt.datetime:
    """``value`` converted to UTC and stripped of its zone (naive values are taken as UTC)."""
    if value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def database_url(settings: Settings) -> str:
    """The database URL: ``DATABASE_URL``, or the SQLite file under ``WORKBOOK_HOME``.

    A bare ``postgresql://`` (or ``postgres://``) URL is mapped to the psycopg2 driver that the
    lock file installs; SQLAlchemy 2.1 would otherwise pick psycopg 3, which is not installed.
    """
    if not settings.database_url:
        return f"sqlite:///{settings.workbook_home / DATABASE_FILE}"
    try:
        url = make_url(settings.database_url)
    except ArgumentError as exc:
        raise BadInputError(f"DATABASE_URL {settings.database_url!r} is not a database URL "
                            "(for example postgresql://user@127.0.0.1:5432/db)") from exc
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg2")
    if url.get_backend_name() not in ("postgresql", "sqlite"):
        raise BadInputError(f"DATABASE_URL uses {url.get_backend_name()!r}: levels 4 and 5 "
                            "support postgresql:// and sqlite:/// URLs")
    return url.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL (readers do not block the writer) and a busy timeout, on every new connection."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")  # first: the next one waits
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def engine_for(settings: Settings, *, schema: str | None = None) -> Engine:
    """An engine for the settings' database; ``schema`` places the tables in that PostgreSQL
    schema (the tests use a private one per run)."""
    url = database_url(settings)
    if url.startswith("sqlite:///"):
        settings.workbook_home.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    if schema:
        return engine.execution_options(schema_translate_map={None: schema})
    return engine


def create_tables(engine: Engine, attempts: int = 8) -> None:
    """Create the four tables and their indexes if they do not exist.

    Safe when several processes do it at once (the gunicorn workers of one service): the check
    and the ``CREATE`` are not atomic, so another process may create a table in between
    (``already exists``), and on SQLite two transactions that both read, then write, end one of
    them at once with ``database is locked`` (waiting could deadlock, so SQLite's busy timeout
    does not apply). Both are retried after a short, growing pause; the check runs again.
    """
    from sqlalchemy.exc import OperationalError, ProgrammingError

    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except (OperationalError, ProgrammingError) as exc:
            transient = "already exists" in str(exc) or "database is locked" in str(exc)
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(min(0.02 * 2 ** attempt, 1.0))


def _insert(engine: Engine, table: Table) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_update`` / ``on_conflict_do_nothing``."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def _prediction_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row for ``predictions``: known columns only, ``logged_at`` defaulting to now (UTC)."""
    unknown = set(row) - set(PREDICTION_COLUMNS)
    if unknown:
        raise ValueError(f"not columns of the prediction log: {', '.join(sorted(unknown))}")
    out = {name: row.get(name) for name in PREDICTION_COLUMNS}
    out["logged_at"] = as_naive_utc(out["logged_at"]) if out["logged_at"] else utc_now()
    return out


def write_predictions(engine: Engine, rows: Iterable[Mapping[str, Any]]) -> int:
    """Append prediction-log rows in one transaction (one executemany); return how many."""
    batch = [_prediction_row(row) for row in rows]
    if batch:
        with engine.begin() as conn:
            conn.execute(predictions.insert(), batch)
    return len(batch)


def prediction_tuple(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A mapping row as the tuple :func:`write_prediction_tuples` takes (checked, as in
    :func:`write_predictions`: unknown columns refused, ``logged_at`` defaulting to now)."""
    checked = _prediction_row(row)
    return tuple(checked[name] for name in PREDICTION_COLUMNS)


def _utc_from_unix(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).replace(tzinfo=None)


_LOGGED_AT = PREDICTION_COLUMNS.index("logged_at")
#: Rows per multi-row INSERT on SQLite: 256 x 11 = 2,816 parameters, within SQLite's limit
#: (32,766 since 3.32; checked on the connection, and fewer rows per statement below it).
SQLITE_ROWS_PER_INSERT = 256
_QUOTED_COLUMNS = ", ".join(f'"{name}"' for name in PREDICTION_COLUMNS)
_SQLITE_ROW = f"({', '.join('?' * len(PREDICTION_COLUMNS))})"


@functools.lru_cache(maxsize=8)
def _sqlite_insert(rows: int) -> str:
    """``INSERT INTO predictions (...) VALUES (?, ...), (?, ...), ...`` for ``rows`` rows."""
    return f"INSERT INTO predictions ({_QUOTED_COLUMNS}) VALUES {', '.join([_SQLITE_ROW] * rows)}"


def _sqlite_rows_per_insert(dbapi_connection: Any) -> int:
    getlimit = getattr(dbapi_connection, "getlimit", None)  # Python 3.11+
    limit = 999 if getlimit is None else getlimit(9)  # 9: SQLITE_LIMIT_VARIABLE_NUMBER
    return max(1, min(SQLITE_ROWS_PER_INSERT, limit // len(PREDICTION_COLUMNS)))


@functools.lru_cache(maxsize=64)
def _sqlite_second(whole: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole))


def _sqlite_time(value: dt.datetime | float) -> str:
    """``logged_at`` the way SQLAlchemy's SQLite ``DateTime`` stores it (always 6 digits of
    microseconds, so stored values compare as text like the ones SQLAlchemy wrote). Unix
    seconds are formatted from a per-second cache: a batch's rows share a few seconds."""
    if isinstance(value, dt.datetime):
        return as_naive_utc(value).isoformat(" ", "microseconds")
    whole = int(value // 1)
    micro = round((value - whole) * 1e6)
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    return f"{_sqlite_second(whole)}.{micro:06d}"


def write_prediction_tuples(engine: Engine, rows: Sequence[tuple[Any, ...]]) -> int:
    """Append prediction-log rows given as tuples in ``PREDICTION_COLUMNS`` order, in one
    transaction; return how many. The prediction log writer's path.

    ``logged_at`` is a naive-UTC ``datetime`` or Unix seconds (a float); the other values are
    Python scalars (no numpy types). On SQLite (no schema translation) the tuples go to the
    driver as they are, without SQLAlchemy's per-row parameter processing, in multi-row
    ``INSERT ... VALUES (...), (...)`` statements of up to ``SQLITE_ROWS_PER_INSERT`` rows: one
    ``sqlite3_step`` (one release of the GIL) per 256 rows, where ``executemany`` steps, and
    hands the GIL to the request thread and back, once per row. The stored text is SQLAlchemy's.
    Elsewhere (PostgreSQL) they go through SQLAlchemy Core, which batches the INSERT into
    multi-row VALUES too.
    """
    if not rows:
        return 0
    at = _LOGGED_AT
    if engine.dialect.name == "sqlite" and not engine.get_execution_options().get(
            "schema_translate_map"):
        params = [v for r in rows for v in (*r[:at], _sqlite_time(r[at]), *r[at + 1:])]
        width = len(PREDICTION_COLUMNS)
        with engine.begin() as conn:  # SQLAlchemy's transaction, the driver's statements
            dbapi = conn.connection.dbapi_connection
            per = _sqlite_rows_per_insert(dbapi)
            cursor = dbapi.cursor()
            try:
                for start in range(0, len(rows), per):
                    count = min(per, len(rows) - start)
                    cursor.execute(_sqlite_insert(count),
                                   params[start * width:(start + count) * width])
            finally:
                cursor.close()
        return len(rows)
    cols = PREDICTION_COLUMNS
    batch = []
    for r in rows:
        row = dict(zip(cols, r, strict=True))
        value = row["logged_at"]
        row["logged_at"] = value if isinstance(value, dt.datetime) else _utc_from_unix(value)
        batch.append(row)
    with engine.begin() as conn:
        conn.execute(predictions.insert(), batch)
    return len(batch)


def _counts(engine: Engine, column: Column) -> dict[str, int]:
    query = select(column, func.count()).group_by(column).order_by(column)
    with engine.connect() as conn:
        return {str(key): int(n) for key, n in conn.execute(query)}


def prediction_summary(engine: Engine) -> dict[str, Any]:
    """How many predictions were logged: in total, by variant and by model version."""
    by_variant = _counts(engine, predictions.c.variant)
    return {"total": sum(by_variant.values()), "by_variant": by_variant,
            "by_version": _counts(engine, predictions.c.model_version)}


def _row_rules() -> dict[str, Any]:
    """The validity rules of a prediction-log row, by name: each a condition its breaches meet."""
    from sqlalchemy import and_, not_, or_

    from level2_devops.service.rides import MAX_TRIP_MILES, MAX_ZONE, MIN_ZONE

    p = predictions
    return {
        "empty request_id": p.c.request_id == "",
        "zone out of range": or_(not_(p.c.PULocationID.between(MIN_ZONE, MAX_ZONE)),
                                 not_(p.c.DOLocationID.between(MIN_ZONE, MAX_ZONE))),
        "trip_distance out of range": not_(p.c.trip_distance.between(0.0, MAX_TRIP_MILES)),
        "non-finite prediction": or_(p.c.prediction > 1e300, p.c.prediction < -1e300),
        "unknown variant": p.c.variant.not_in(("champion", "challenger")),
        "empty model_version": p.c.model_version == "",
        "shadow version without prediction (or the reverse)": or_(
            and_(p.c.shadow_version.is_(None), p.c.shadow_prediction.is_not(None)),
            and_(p.c.shadow_version.is_not(None), p.c.shadow_prediction.is_(None))),
        "non-finite shadow prediction": or_(p.c.shadow_prediction > 1e300,
                                            p.c.shadow_prediction < -1e300),
    }


def check_predictions(engine: Engine) -> dict[str, Any]:
    """The prediction log's integrity: its rows, duplicated rows (the same ride of the same
    request, by ``request_id``, ``ride_id``, zones and distance, logged more than once — a
    request that repeats a ride word for word shows up here too) and breaches of each
    validity rule. Reads only."""
    p = predictions
    key = (p.c.request_id, p.c.ride_id, p.c.PULocationID, p.c.DOLocationID, p.c.trip_distance)
    dupes = (select(func.count().label("n")).select_from(p).group_by(*key)
             .having(func.count() > 1).subquery())
    rules = _row_rules()
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(p)).scalar_one()
        requests = conn.execute(select(func.count(p.c.request_id.distinct()))).scalar_one()
        extra = conn.execute(select(func.count(), func.coalesce(func.sum(dupes.c.n), 0))
                             .select_from(dupes)).one()
        invalid = {name: int(conn.execute(select(func.count()).select_from(p).where(rule))
                             .scalar_one()) for name, rule in rules.items()}
    return {"rows": int(total), "request_ids": int(requests),
            "duplicated_rides": int(extra[0]), "duplicate_rows": int(extra[1]) - int(extra[0]),
            "invalid_rows": {k: v for k, v in invalid.items() if v}}


def record_actuals(engine: Engine, rows: Iterable[Mapping[str, Any]]) -> int:
    """Record true durations by ride_id; rides already recorded are left alone (re-runs are
    harmless). Returns the number of new rows."""
    now = utc_now()
    batch = [{"ride_id": r["ride_id"], "pickup_datetime": as_naive_utc(r["pickup_datetime"]),
              "dropoff_datetime": as_naive_utc(r["dropoff_datetime"]),
              "duration": float(r["duration"]), "recorded_at": now} for r in rows]
    with engine.begin() as conn:
        before = conn.execute(select(func.count()).select_from(actuals)).scalar_one()
        if batch:
            conn.execute(_insert(engine, actuals).on_conflict_do_nothing(), batch)
        after = conn.execute(select(func.count()).select_from(actuals)).scalar_one()
    return int(after - before)


def joined_predictions(engine: Engine, since: dt.datetime | None = None,
                       until: dt.datetime | None = None, *, by: str = "logged_at",
                       labelled_only: bool = True) -> pd.DataFrame:
    """Logged predictions with their actual duration (``duration``, NaN while unknown).

    The window ``[since, until)`` applies to ``logged_at`` (when the service answered) or, with
    ``by="pickup"``, to the trip's pickup time (replayed historical trips, which are logged
    today). ``labelled_only`` keeps only the rows whose actual is known; ``by="pickup"`` implies it.
    """
    if by not in JOIN_WINDOWS:
        raise BadInputError(f"by={by!r}: use one of {', '.join(JOIN_WINDOWS)}")
    p, a = predictions, actuals
    on = p.c.ride_id == a.c.ride_id
    joined = p.join(a, on) if labelled_only or by == "pickup" else p.outerjoin(a, on)
    query = select(*p.columns, a.c.pickup_datetime, a.c.dropoff_datetime,
                   a.c.duration).select_from(joined)
    column = p.c.logged_at if by == "logged_at" else a.c.pickup_datetime
    if since is not None:
        query = query.where(column >= as_naive_utc(since))
    if until is not None:
        query = query.where(column < as_naive_utc(until))
    with engine.connect() as conn:
        result = conn.execute(query.order_by(p.c.id))
        frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    frame["duration"] = pd.to_numeric(frame["duration"], errors="coerce").astype("float64")
    for name in ("prediction", "shadow_prediction", "trip_distance"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    return frame


def write_metrics(engine: Engine, day: dt.date, values: Mapping[str, float | None],
                  model_version: str | None) -> int:
    """Store a day's metrics, replacing that day's earlier values of the same metrics."""
    now = utc_now()
    rows = [{"day": day, "metric": name, "value": _finite_or_none(value),
             "model_version": model_version, "computed_at": now}
            for name, value in values.items()]
    if rows:
        stmt = _insert(engine, monitoring_metrics)
        stmt = stmt.on_conflict_do_update(
            index_elements=["day", "metric"],
            set_={"value": stmt.excluded.value, "model_version": stmt.excluded.model_version,
                  "computed_at": stmt.excluded.computed_at})
        with engine.begin() as conn:
            conn.execute(stmt, rows)
    return len(rows)


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def read_metrics(engine: Engine, since: dt.date | None = None, until: dt.date | None = None,
                 metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Stored daily metrics for days in ``[since, until]`` (both inclusive), oldest first."""
    m = monitoring_metrics
    query = select(m.c.day, m.c.metric, m.c.value, m.c.model_version, m.c.computed_at)
    if since is not None:
        query = query.where(m.c.day >= since)
    if until is not None:
        query = query.where(m.c.day <= until)
    if metrics:
        query = query.where(m.c.metric.in_(list(metrics)))
    with engine.connect() as conn:
        result = conn.execute(query.order_by(m.c.day, m.c.metric))
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def write_alerts(engine: Engine, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Store alerts (day, metric, value, threshold, message); return those that are new.

    An alert for a (day, metric) that is already stored updates it, so re-running a day does
    not duplicate its alerts (and the caller does not notify twice).
    """
    now = utc_now()
    batch = [{"day": r["day"], "metric": r["metric"], "value": float(r["value"]),
              "threshold": float(r["threshold"]), "message": str(r["message"]),
              "created_at": now} for r in rows]
    if not batch:
        return []
    a = alerts
    keys = {(r["day"], r["metric"]) for r in batch}
    days = sorted({day for day, _ in keys})
    with engine.begin() as conn:
        existing = {(day, metric) for day, metric in conn.execute(
            select(a.c.day, a.c.metric).where(a.c.day.in_(days)))}
        stmt = _insert(engine, a)
        stmt = stmt.on_conflict_do_update(
            index_elements=["day", "metric"],
            set_={"value": stmt.excluded.value, "threshold": stmt.excluded.threshold,
                  "message": stmt.excluded.message})
        conn.execute(stmt, batch)
    return [r for r in batch if (r["day"], r["metric"]) not in existing]


def read_alerts(engine: Engine, since: dt.date | None = None,
                until: dt.date | None = None) -> pd.DataFrame:
    """Stored alerts for days in ``[since, until]`` (both inclusive), oldest first."""
    a = alerts
    query = select(a.c.day, a.c.metric, a.c.value, a.c.threshold, a.c.message, a.c.created_at)
    if since is not None:
        query = query.where(a.c.day >= since)
    if until is not None:
        query = query.where(a.c.day <= until)
    with engine.connect() as conn:
        result = conn.execute(query.order_by(a.c.day, a.c.metric))
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
