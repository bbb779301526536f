"""``schema.validate_trips``: the columns the workbook reads, present and of the right kind."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from taxi_common.errors import BadInputError, SchemaError
from taxi_common.schema import GREEN_DTYPES, YELLOW_DTYPES, trip_columns, validate_trips

T0 = pd.Timestamp("2021-01-01 08:00")


def _trips(color: str, n: int = 2) -> pd.DataFrame:
    """The columns the workbook reads for ``color``, with valid values."""
    cols = trip_columns(color)
    data: dict[str, object] = {cols.pickup: [T0] * n,
                               cols.dropoff: [T0 + pd.Timedelta(minutes=7)] * n,
                               cols.pickup_zone: [74] * n, cols.dropoff_zone: [75] * n}
    if cols.distance:
        data[cols.distance] = [1.2] * n
    return pd.DataFrame(data)


@pytest.mark.parametrize("color", ["green", "yellow", "fhv"])
def test_valid_frame_is_returned_unchanged(color: str) -> None:
    df = _trips(color)
    assert validate_trips(df, color, "test") is df


def test_exact_schemas_pass() -> None:
    for color, dtypes in (("green", GREEN_DTYPES), ("yellow", YELLOW_DTYPES)):
        empty = pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in dtypes.items()})
        validate_trips(empty, color, f"empty {color}")


def test_green_and_yellow_names_are_not_interchangeable() -> None:
    with pytest.raises(SchemaError, match="'lpep_pickup_datetime' is missing; is this a green"):
        validate_trips(_trips("yellow"), "green", "yellow.parquet")
    with pytest.raises(SchemaError, match="'tpep_pickup_datetime' is missing; is this a yellow"):
        validate_trips(_trips("green"), "yellow", "green.parquet")


def test_fhv_needs_no_distance_but_its_own_zone_names() -> None:
    assert trip_columns("fhv").distance is None
    renamed = _trips("green").rename(columns={"lpep_pickup_datetime": "pickup_datetime",
                                              "lpep_dropoff_datetime": "dropOff_datetime"})
    with pytest.raises(SchemaError, match="'PUlocationID' is missing"):
        validate_trips(renamed, "fhv", "fhv.parquet")


@pytest.mark.parametrize("column", ["lpep_dropoff_datetime", "DOLocationID", "trip_distance"])
def test_missing_column_names_the_source_and_the_column(column: str) -> None:
    with pytest.raises(SchemaError) as info:
        validate_trips(_trips("green").drop(columns=column), "green", "jan.parquet")
    message = str(info.value)
    assert message.startswith(f"jan.parquet: column {column!r} is missing")
    assert "columns present: lpep_pickup_datetime" in message and "\n" not in message


def test_long_column_lists_are_cut_short() -> None:
    df = _trips("green").drop(columns="trip_distance")
    for i in range(10):
        df[f"extra_{i}"] = i
    assert str(pytest.raises(SchemaError, validate_trips, df, "green", "x").value).endswith("…)")


@pytest.mark.parametrize(("column", "values", "expected"), [
    ("lpep_pickup_datetime", ["2021-01-01 08:00"] * 2, "expected a timestamp"),
    ("lpep_dropoff_datetime", [1.0, 2.0], "expected a timestamp"),
    ("PULocationID", ["74", "75"], "expected a number"),
    ("DOLocationID", [True, False], "expected a number"),
    ("trip_distance", ["1.2", "3.4"], "expected a number"),
])
def test_wrong_type_names_the_column_and_the_kind(column: str, values: list[object],
                                                   expected: str) -> None:
    df = _trips("green").assign(**{column: values})
    pattern = f"^f.parquet: column '{column}' has type .*, {expected}$"
    with pytest.raises(SchemaError, match=pattern):
        validate_trips(df, "green", "f.parquet")


def test_type_drift_across_years_is_accepted() -> None:
    # int32 or float zone IDs, nullable ints, timestamps in ns or with a time zone: all fine.
    df = _trips("green").astype({"PULocationID": "int32", "DOLocationID": "float64"})
    df["trip_distance"] = pd.array([1, None], dtype="Int64")
    df["lpep_pickup_datetime"] = df["lpep_pickup_datetime"].dt.tz_localize("America/New_York")
    df["lpep_dropoff_datetime"] = df["lpep_dropoff_datetime"].astype("datetime64[ns]")
    assert validate_trips(df, "green", "drift") is df


def test_unknown_color() -> None:
    with pytest.raises(BadInputError, match="unknown taxi color 'blue': use one of green, yellow"):
        validate_trips(_trips("green"), "blue", "x")


@pytest.mark.tlc
def test_real_green_file_has_the_exact_schema(tlc_dir: Path) -> None:
    df = pd.read_parquet(tlc_dir / "green_tripdata_2021-01.parquet")
    assert {c: str(t) for c, t in df.dtypes.items()} == GREEN_DTYPES
    assert validate_trips(df, "green", "real") is df


def test_exact_duplicates_are_those_of_pandas() -> None:
    """The hashed shortcut gives ``DataFrame.duplicated()``: a row equal to an earlier one in
    every column is a duplicate; one that differs only in a text column is not."""
    from taxi_common.schema import exact_duplicates
    from taxi_common.synthetic import generate_month

    month = generate_month("2021-01", n_rows=300)
    near = month.head(5).assign(store_and_fwd_flag="Y", ehail_fee="x")
    frame = pd.concat([month, month.head(20), near], ignore_index=True)
    found = exact_duplicates(frame)
    assert found.equals(frame.duplicated())
    assert int(found.sum()) == 20
