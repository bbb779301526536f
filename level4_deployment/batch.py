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

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from taxi_common.data import check_source
from taxi_common.errors import BadInputError
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
    from taxi_common.sources import download_month

    return download_month(color, month, settings=settings, progress=True)


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


def score_frame(trips: pd.DataFrame, model: Any, version: str, *,
                color: str = "green") -> pd.DataFrame:
    """Score raw trips (TLC schema) with a serving model; the output columns of this module."""
    from level2_devops.service.rides import RideBatch
    from level4_deployment.traffic import ride_id_for
    from taxi_common.schema import trip_columns

    cols = trip_columns(color)
    ok = _servable(trips, cols.pickup_zone, cols.dropoff_zone)
    predicted = np.full(len(trips), np.nan)
    if ok.any():
        rides = RideBatch(trips[cols.pickup_zone].to_numpy()[ok].astype(np.int64),
                          trips[cols.dropoff_zone].to_numpy()[ok].astype(np.int64),
                          trips["trip_distance"].to_numpy(dtype=np.float64)[ok])
        predicted[ok] = model.predict(rides)
    actual = (trips[cols.dropoff] - trips[cols.pickup]).dt.total_seconds().to_numpy() / 60.0
    return pd.DataFrame({
        "ride_id": ride_id_for(trips, color).to_numpy(),
        "pickup_datetime": trips[cols.pickup].to_numpy(),
        "PULocationID": trips[cols.pickup_zone].astype("Int64").to_numpy(),
        "DOLocationID": trips[cols.dropoff_zone].astype("Int64").to_numpy(),
        "trip_distance": trips["trip_distance"].to_numpy(dtype=np.float64),
        "actual_duration": actual,
        "predicted_duration": predicted,
        "difference": predicted - actual,
        "model_version": pd.Series(version, index=trips.index, dtype="string").to_numpy(),
    })


def score_row_group(path: Path, index: int, model: Any, version: str,
                    color: str = "green") -> pd.DataFrame:
    """Read row group ``index`` of ``path`` and score it.

    Ride ids are computed within the row group: two identical trips (same times, zones and
    distance) in different row groups would share an id, where the whole month tells them apart.
    """
    import pyarrow.parquet as pq

    trips = pq.ParquetFile(path).read_row_group(index).to_pandas()
    return score_frame(trips, model, version, color=color)


def concatenate_parts(parts: list[Path], out: Path) -> int:
    """Append the part files, in order, into ``out`` (atomically); rows written."""
    import pyarrow.parquet as pq

    rows = 0
    with atomic_write(out) as (file, _):
        writer = None
        for part in parts:
            table = pq.read_table(part)
            if writer is None:
                writer = pq.ParquetWriter(file, table.schema, compression="snappy")
            writer.write_table(table)
            rows += table.num_rows
        if writer is not None:
            writer.close()
    return rows


def score_file(path: Path, model: Any, version: str, out: Path, *, color: str = "green",
               progress: Callable[[int, int], None] | None = None) -> BatchResult:
    """Score every row group of ``path`` in this process into ``out``; memory: one row group."""
    start = time.perf_counter()
    groups = row_group_count(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts_dir = Path(tempfile.mkdtemp(prefix=".score-parts-", dir=out.parent))
    try:
        parts, scored = [], 0
        for index in range(groups):
            frame = score_row_group(path, index, model, version, color)
            scored += int(frame["predicted_duration"].notna().sum())
            part = parts_dir / f"part-{index:05d}.parquet"
            frame.to_parquet(part, index=False)
            parts.append(part)
            if progress:
                progress(index + 1, groups)
        rows = concatenate_parts(parts, out)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    return BatchResult(out, rows, scored, groups, version, time.perf_counter() - start)
