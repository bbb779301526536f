"""The TLC trip-record schemas (green, yellow, fhv) and the one function that validates a table.

The TLC's files drift in small ways over the years (int32 vs int64 IDs, ``airport_fee`` vs
``Airport_fee``), so validation checks what the workbook relies on: the columns it reads must be
present and of the right kind. ``GREEN_DTYPES`` is the exact schema of the 2021 green files, which
the synthetic generator reproduces column for column.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from taxi_common.errors import BadInputError, SchemaError

log = logging.getLogger(__name__)

COLORS = ("green", "yellow", "fhv")

#: Exact pandas dtypes of the green 2021 files, in file order.
GREEN_DTYPES: dict[str, str] = {
    "VendorID": "int64",
    "lpep_pickup_datetime": "datetime64[us]",
    "lpep_dropoff_datetime": "datetime64[us]",
    "store_and_fwd_flag": "object",
    "RatecodeID": "float64",
    "PULocationID": "int64",
    "DOLocationID": "int64",
    "passenger_count": "float64",
    "trip_distance": "float64",
    "fare_amount": "float64",
    "extra": "float64",
    "mta_tax": "float64",
    "tip_amount": "float64",
    "tolls_amount": "float64",
    "ehail_fee": "object",
    "improvement_surcharge": "float64",
    "total_amount": "float64",
    "payment_type": "float64",
    "trip_type": "float64",
    "congestion_surcharge": "float64",
}

#: Pandas dtypes of the yellow files of the same era, in file order.
YELLOW_DTYPES: dict[str, str] = {
    "VendorID": "int64",
    "tpep_pickup_datetime": "datetime64[us]",
    "tpep_dropoff_datetime": "datetime64[us]",
    "passenger_count": "float64",
    "trip_distance": "float64",
    "RatecodeID": "float64",
    "store_and_fwd_flag": "object",
    "PULocationID": "int64",
    "DOLocationID": "int64",
    "payment_type": "int64",
    "fare_amount": "float64",
    "extra": "float64",
    "mta_tax": "float64",
    "tip_amount": "float64",
    "tolls_amount": "float64",
    "improvement_surcharge": "float64",
    "total_amount": "float64",
    "congestion_surcharge": "float64",
    "airport_fee": "float64",
}


@dataclass(frozen=True)
class TripColumns:
    """The names, per color, of the columns the workbook reads."""

    pickup: str
    dropoff: str
    pickup_zone: str
    dropoff_zone: str
    distance: str | None


TRIP_COLUMNS: dict[str, TripColumns] = {
    "green": TripColumns("lpep_pickup_datetime", "lpep_dropoff_datetime",
                         "PULocationID", "DOLocationID", "trip_distance"),
    "yellow": TripColumns("tpep_pickup_datetime", "tpep_dropoff_datetime",
                          "PULocationID", "DOLocationID", "trip_distance"),
    # For-hire vehicles report no distance: they can be explored, not used to train the model.
    "fhv": TripColumns("pickup_datetime", "dropOff_datetime", "PUlocationID", "DOlocationID", None),
}


def trip_columns(color: str) -> TripColumns:
    """The column names for ``color``; a clear :class:`BadInputError` for an unknown color."""
    if color not in TRIP_COLUMNS:
        raise BadInputError(f"unknown taxi color {color!r}: use one of {', '.join(COLORS)}")
    return TRIP_COLUMNS[color]


def _kind_problem(series: pd.Series, wanted: str) -> str | None:
    """Why ``series`` is not of kind ``wanted`` ("datetime" or "number"), or None if it is."""
    if wanted == "datetime" and not pd.api.types.is_datetime64_any_dtype(series):
        return f"has type {series.dtype}, expected a timestamp"
    if wanted == "number" and not (
        pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    ):
        return f"has type {series.dtype}, expected a number"
    return None


#: Above this share of pickups outside the month it is named for, a file is the wrong file.
MAX_OUTSIDE_SHARE = 0.05


def pickups_outside_month(pickups: pd.Series, month: str) -> int:
    """How many of ``pickups`` (naive timestamps) fall outside ``month`` (``YYYY-MM``)."""
    start = pd.Timestamp(f"{month}-01")
    end = start + pd.offsets.MonthBegin(1)
    return int((~pickups.between(start, end, inclusive="left")).sum())


def exact_duplicates(df: pd.DataFrame) -> pd.Series:
    """True for each row equal, in every column, to an earlier row (``df.duplicated()``).

    Fast on a month of millions of rows: the numeric and timestamp columns are hashed first
    (``pd.util.hash_pandas_object``), and only the rows whose hash repeats are compared in full.
    """
    numeric = [c for c in df.columns if df[c].dtype.kind in "biufmM"] or list(df.columns)
    hashes = pd.util.hash_pandas_object(df[numeric], index=False)
    out = pd.Series(False, index=df.index)
    candidates = hashes.duplicated(keep=False).to_numpy()
    if candidates.any():
        out[candidates] = df.loc[candidates].duplicated().to_numpy()
    return out


def check_month_content(df: pd.DataFrame, color: str, month: str, source: str,
                        *, max_outside_share: float = MAX_OUTSIDE_SHARE) -> pd.DataFrame:
    """The rows of a real month's file that the workbook uses, after two content checks.

    - Exact duplicate rows (every column equal: the same trip twice, as when a file is
      appended to itself) are dropped, with a warning giving their number. The TLC's own
      2021 green files have none.
    - Pickups outside ``month``: a few are kept (the TLC's files hold strays, 3 trips of 2009 in
      green 2021-01, as the classic recipe keeps them, with a warning); more than
      ``max_outside_share`` of the trips means the file is not that month's:
      :class:`SchemaError`.
    """
    duplicated = exact_duplicates(df)
    dropped = int(duplicated.sum())
    if dropped:
        log.warning("%s: dropped %d exact duplicate rows of %d", source, dropped, len(df))
        df = df.loc[~duplicated].reset_index(drop=True)
    check_pickups_in_month(df[trip_columns(color).pickup], month, source,
                           max_outside_share=max_outside_share)
    return df


def check_pickups_in_month(pickups: pd.Series, month: str, source: str, *,
                           max_outside_share: float = MAX_OUTSIDE_SHARE) -> int:
    """How many ``pickups`` fall outside ``month`` (logged when any); more than
    ``max_outside_share`` of them: :class:`SchemaError` (the file is not that month's)."""
    outside = pickups_outside_month(pickups, month)
    if outside > max_outside_share * len(pickups):
        raise SchemaError(
            f"{source}: {outside:,} of {len(pickups):,} trips ({outside / len(pickups):.0%}) "
            f"were picked up outside {month} (from {pickups.min()} to {pickups.max()}): is "
            f"this the {month} file? check TLC_BASE_URL")
    if outside:
        log.warning("%s: %d of %d trips picked up outside %s, kept", source, outside,
                    len(pickups), month)
    return outside


def validate_trips(df: pd.DataFrame, color: str, source: str) -> pd.DataFrame:
    """Check that ``df`` has the columns the workbook reads, of the right kind; return it.

    Raises :class:`SchemaError` naming ``source`` (a file or month) and the first bad column.
    """
    cols = trip_columns(color)
    wanted = {cols.pickup: "datetime", cols.dropoff: "datetime",
              cols.pickup_zone: "number", cols.dropoff_zone: "number"}
    if cols.distance:
        wanted[cols.distance] = "number"
    for name, kind in wanted.items():
        if name not in df.columns:
            raise SchemaError(
                f"{source}: column {name!r} is missing; is this a {color} taxi trip file? "
                f"(columns present: {', '.join(map(str, df.columns[:8]))}"
                f"{'…' if len(df.columns) > 8 else ''})"
            )
        problem = _kind_problem(df[name], kind)
        if problem:
            raise SchemaError(f"{source}: column {name!r} {problem}")
    for name in (cols.pickup_zone, cols.dropoff_zone):
        _check_whole_numbers(df[name], name, source)
    return df


def _check_whole_numbers(series: pd.Series, name: str, source: str) -> None:
    """Zone IDs stored as floats (the TLC's own files use integers) must still be whole
    numbers where present; a :class:`SchemaError` naming one that is not."""
    if pd.api.types.is_integer_dtype(series):
        return
    values = series.dropna().to_numpy(dtype="float64")
    bad = values[values != values.round()]
    if len(bad):
        raise SchemaError(f"{source}: column {name!r} holds {len(bad):,} zone IDs that are not "
                          f"whole numbers (for example {bad[0]:g}): fix the file")
