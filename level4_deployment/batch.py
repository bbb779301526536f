"""Batch scoring: a month scored by the champion into one parquet file, one row group at a time.

The month's trips come from a parquet file (the TLC cache, or a synthetic month written once under
``$WORKBOOK_HOME/data/synthetic``). Each row group is read, scored and written on its own, so memory
stays bounded by one row group (about a million rows) whatever the month's size. Scoring is
vectorised with level 2's serving model (the zone-pair lookup for linear pipelines).

Output columns: ``ride_id`` (the same id :mod:`level4_deployment.traffic` gives the trip when it is
replayed), ``pickup_datetime``, ``PULocationID``, ``DOLocationID``, ``trip_distance``,
``actual_duration`` and ``predicted_duration`` (minutes), ``difference`` (predicted − actual) and
``model_version``. Every trip is scored; a trip whose zones or distance the service would refuse
(a missing zone, a distance beyond 200 miles) gets a missing prediction rather than a made-up one.

With a Dask scheduler address (or ``local_dask=True``, which starts a ``LocalCluster`` on
127.0.0.1), each row group is a Prefect task run on the cluster through ``prefect-dask``'s
``DaskTaskRunner``; the parts are then concatenated in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from taxi_common.data import check_source
from taxi_common.errors import BadInputError, SchemaError
from taxi_common.files import atomic_write
from taxi_common.scenarios import Scenario, as_scenario
from taxi_common.settings import Settings

OUTPUT_COLUMNS = ("ride_id", "pickup_datetime", "PULocationID", "DOLocationID", "trip_distance",
                  "actual_duration", "predicted_duration", "difference", "model_version")


@dataclass(frozen=True)
class BatchResult:
    """What a scoring run wrote."""

    out: Path
    rows: int
    scored: int
    row_groups: int
    model_version: str
    seconds: float

    @property
    def rows_per_second(self) -> float:
        """Rows scored per second of wall time."""
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def synthetic_month_file(month: str, settings: Settings, *, seed: int = 0,
                         scenario: Scenario | str = "baseline",
                         n_rows: int | None = None) -> Path:
    """The synthetic month as a parquet file under the home, written once (deterministic)."""
    from taxi_common.synthetic import write_month

    spec = as_scenario(scenario)
    name = (f"green_{month}_seed{seed}_{spec.name}-d{spec.start_day}-s{spec.strength:g}"
            f"_{'all' if n_rows is None else n_rows}.parquet")
    path = settings.workbook_home / "data" / "synthetic" / name
    if not path.exists():
        write_month(month, path, seed=seed, scenario=spec, n_rows=n_rows)
    return path


def month_file(month: str, settings: Settings, *, source: str = "synthetic",
               color: str = "green", seed: int = 0, scenario: Scenario | str = "baseline",
               n_rows: int | None = None) -> Path:
    """The parquet file holding the month's raw trips (downloaded or generated once)."""
    if check_source(source) == "synthetic":
        if color != "green":
            raise BadInputError("synthetic data follows the green taxi schema: use --color green")
        return synthetic_month_file(month, settings, seed=seed, scenario=scenario, n_rows=n_rows)
    if n_rows is not None:
        raise BadInputError("--rows applies to synthetic data; a real month is scored whole")
    import pyarrow.parquet as pq

    from taxi_common.schema import check_pickups_in_month, trip_columns
    from taxi_common.sources import download_month

    path = download_month(color, month, settings=settings, progress=True)
    pickup = trip_columns(color).pickup  # one column: cheap on a month of any size
    try:
        check_pickups_in_month(pq.read_table(path, columns=[pickup]).column(pickup).to_pandas(),
                               month, f"{color} {month} file {path}")
    except SchemaError:  # not this month's trips: a corrected mirror is downloaded next time
        path.unlink(missing_ok=True)
        raise
    return path


def row_group_count(path: Path) -> int:
    """How many row groups the parquet file has (the unit of work)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_row_groups


def _servable(trips: pd.DataFrame, pickup: str, dropoff: str) -> np.ndarray:
    """Rows the service would accept: both zones 1-265, a distance from 0 to 200 miles."""
    from level2_devops.service.rides import MAX_TRIP_MILES, MAX_ZONE, MIN_ZONE

    zones_ok = np.ones(len(trips), dtype=bool)
    for name in (pickup, dropoff):
        zone = pd.to_numeric(trips[name], errors="coerce").to_numpy(dtype=np.float64)
        zones_ok &= (zone >= MIN_ZONE) & (zone <= MAX_ZONE)
    distance = pd.to_numeric(trips["trip_distance"], errors="coerce").to_numpy(dtype=np.float64)
    return zones_ok & np.isfinite(distance) & (distance >= 0) & (distance <= MAX_TRIP_MILES)


def _string_array(fixed: np.ndarray) -> Any:
    """An arrow ``string`` array over a numpy ``S<k>`` array of ASCII text, without one Python
    object per row (the bytes are shared, the offsets are ``0, k, 2k, ...``)."""
    import pyarrow as pa

    width, n = fixed.dtype.itemsize, len(fixed)
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets),
                                                  pa.py_buffer(np.ascontiguousarray(fixed))])


def input_columns(color: str = "green") -> list[str]:
    """The columns of the raw trips that scoring reads (the rest of the file is not read)."""
    from taxi_common.schema import trip_columns

    cols = trip_columns(color)
    return [cols.pickup, cols.dropoff, cols.pickup_zone, cols.dropoff_zone, "trip_distance"]


def score_table(table: Any, model: Any, version: str, *, color: str = "green") -> Any:
    """Score raw trips (an arrow table in the TLC schema) with a serving model; an arrow table
    with the output columns of this module.

    Vectorised from end to end: the features go to ``model.predict`` as three numpy arrays, the
    ride ids are :func:`~level4_deployment.traffic.ride_id_hex` (numpy, no loop over rows), and
    the output columns are built as arrow arrays (the zones and pickup times are the input's own
    arrow columns), so no pandas object column is made for 16-character ids or the version.
    """
    import pyarrow as pa

    from level2_devops.service.rides import RideBatch
    from level4_deployment.traffic import ride_id_hex
    from taxi_common.schema import trip_columns, validate_trips

    cols = trip_columns(color)
    frame = validate_trips(table.select(input_columns(color)).to_pandas(), color,
                           "the trips to score")  # zone IDs that are not whole: one line
    ok = _servable(frame, cols.pickup_zone, cols.dropoff_zone)
    n = len(frame)
    predicted = np.full(n, np.nan)
    distance = frame["trip_distance"].to_numpy(dtype=np.float64)
    if ok.any():
        rides = RideBatch(frame[cols.pickup_zone].to_numpy()[ok].astype(np.int64),
                          frame[cols.dropoff_zone].to_numpy()[ok].astype(np.int64),
                          distance[ok])
        predicted[ok] = model.predict(rides)
    actual = ((frame[cols.dropoff] - frame[cols.pickup]).dt.total_seconds() / 60.0).to_numpy()
    return pa.table({
        "ride_id": _string_array(ride_id_hex(frame, color)),
        "pickup_datetime": table.column(cols.pickup),
        "PULocationID": table.column(cols.pickup_zone).cast(pa.int64()),
        "DOLocationID": table.column(cols.dropoff_zone).cast(pa.int64()),
        "trip_distance": pa.array(distance, pa.float64()),
        "actual_duration": pa.array(actual, pa.float64()),
        "predicted_duration": pa.array(predicted, pa.float64()),
        "difference": pa.array(predicted - actual, pa.float64()),
        "model_version": pa.repeat(pa.scalar(version, pa.string()), n),
    })


def score_frame(trips: pd.DataFrame, model: Any, version: str, *,
                color: str = "green") -> pd.DataFrame:
    """Score raw trips (TLC schema, a DataFrame) with a serving model: :func:`score_table` as
    a DataFrame, with the input's index."""
    import pyarrow as pa

    table = pa.Table.from_pandas(trips[input_columns(color)], preserve_index=False)
    scored = score_table(table, model, version, color=color).to_pandas()
    scored.index = trips.index
    return scored


def check_trip_file(path: Path, color: str = "green") -> int:
    """The row count of a parquet file of raw trips to score, after the loader's checks
    (footer, columns the scoring reads and their types, the first row group decodes); a
    :class:`~taxi_common.errors.DataCorruptError` or ``SchemaError`` naming the file otherwise."""
    from taxi_common.sources import check_parquet

    return check_parquet(Path(path), color, f"trip file {path}")


def read_row_group(path: Path, index: int, color: str = "green") -> Any:
    """Row group ``index`` of ``path``: the columns scoring reads, as an arrow table; a row
    group that cannot be decoded is a :class:`~taxi_common.errors.DataCorruptError` (the
    output file, written atomically, then never appears)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from taxi_common.errors import DataCorruptError

    try:
        return pq.ParquetFile(path).read_row_group(index, columns=input_columns(color))
    except (pa.ArrowException, OSError) as exc:
        reason = " ".join(str(exc).split())
        raise DataCorruptError(f"trip file {path}: row group {index} cannot be decoded "
                               f"({reason}): nothing was written; replace the file") from None


def score_row_group(path: Path, index: int, model: Any, version: str,
                    color: str = "green") -> Any:
    """Read row group ``index`` of ``path`` and score it; an arrow table.

    Ride ids are computed within the row group: two identical trips (same times, zones and
    distance) in different row groups would share an id, where the whole month tells them apart.
    """
    return score_table(read_row_group(path, index, color), model, version, color=color)


def scored_count(table: Any) -> int:
    """Rows of a scored table that got a prediction."""
    import pyarrow.compute as pc

    return len(table) - int(pc.sum(pc.is_nan(table.column("predicted_duration"))).as_py() or 0)


class ScoreWriter:
    """One ``ParquetWriter`` for the whole output, written atomically: each scored row group is
    appended as it comes (one row group of the output per input row group), and the file
    appears under its name only once it is complete."""

    def __init__(self, out: Path) -> None:
        self.out, self.rows, self.scored, self.row_groups = out, 0, 0, 0
        self._writer: Any = None

    def write(self, table: Any) -> None:
        """Append one scored table."""
        import pyarrow.parquet as pq

        if self._writer is None:
            self._writer = pq.ParquetWriter(self._file, table.schema, compression="snappy")
        self._writer.write_table(table, row_group_size=max(len(table), 1))
        self.rows += len(table)
        self.scored += scored_count(table)
        self.row_groups += 1

    def __enter__(self) -> ScoreWriter:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._atomic = atomic_write(self.out)
        self._file, _ = self._atomic.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            self._atomic.__exit__(*exc)


def score_file(path: Path, model: Any, version: str, out: Path, *, color: str = "green",
               progress: Callable[[int, int], None] | None = None) -> BatchResult:
    """Score every row group of ``path`` in this process into ``out``; memory: one row group."""
    start = time.perf_counter()
    check_trip_file(path, color)
    groups = row_group_count(path)
    with ScoreWriter(out) as writer:
        for index in range(groups):
            writer.write(score_row_group(path, index, model, version, color))
            if progress:
                progress(index + 1, groups)
    return BatchResult(out, writer.rows, writer.scored, groups, version,
                       time.perf_counter() - start)
