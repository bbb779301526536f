"""From raw trips to training rows: duration in minutes, the 1–60 minute filter, zone categories.

This is the classic recipe of the course notebook, as small functions.
"""

from __future__ import annotations

import pandas as pd

from taxi_common.schema import trip_columns

MIN_MINUTES = 1.0
MAX_MINUTES = 60.0
ZONE_COLUMNS = ("PULocationID", "DOLocationID")
FEATURE_COLUMNS = ("PULocationID", "DOLocationID", "trip_distance")
TARGET = "duration"


def add_duration(df: pd.DataFrame, color: str = "green") -> pd.DataFrame:
    """A copy of ``df`` with ``duration``: drop-off minus pickup, in minutes."""
    cols = trip_columns(color)
    out = df.copy()
    out[TARGET] = (out[cols.dropoff] - out[cols.pickup]).dt.total_seconds() / 60.0
    return out


def filter_outliers(
    df: pd.DataFrame, min_minutes: float = MIN_MINUTES, max_minutes: float = MAX_MINUTES
) -> pd.DataFrame:
    """Keep the trips whose duration lies in ``[min_minutes, max_minutes]``."""
    keep = df[TARGET].between(min_minutes, max_minutes)
    return df.loc[keep].reset_index(drop=True)


def cast_zones(df: pd.DataFrame, color: str = "green") -> pd.DataFrame:
    """A copy with the pickup and drop-off zone IDs as categoricals named PULocationID/DOLocationID.

    The categories are the integer zone IDs, so ``str(value)`` gives the classic recipe's keys and
    ``np.asarray(column)`` gives integers.
    """
    cols = trip_columns(color)
    out = df.rename(columns={cols.pickup_zone: "PULocationID", cols.dropoff_zone: "DOLocationID"})
    for name in ZONE_COLUMNS:
        out[name] = out[name].astype("Int64").astype("category")
    return out


def input_columns(color: str = "green") -> list[str]:
    """The raw columns :func:`prepare_trips` reads: pickup and drop-off times, zones, distance
    (to load or keep only these, for example ``pd.read_parquet(path, columns=...)``)."""
    cols = trip_columns(color)
    return [name for name in (cols.pickup, cols.dropoff, cols.pickup_zone, cols.dropoff_zone,
                              cols.distance) if name is not None]


def prepare_trips(df: pd.DataFrame, color: str = "green") -> pd.DataFrame:
    """Duration, the 1–60 minute filter and zone categoricals, in that order."""
    return cast_zones(filter_outliers(add_duration(df, color)), color)


def training_frame(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Split prepared trips into the model's input columns and the target."""
    return df[list(FEATURE_COLUMNS)], df[TARGET]
