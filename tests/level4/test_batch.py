"""Batch scoring on real synthetic months: row group by row group, the same numbers as predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from level4_deployment.batch import OUTPUT_COLUMNS, month_file, score_file
from taxi_common.errors import BadInputError
from taxi_common.prepare import FEATURE_COLUMNS
from taxi_common.settings import Settings


@pytest.fixture(scope="module")
def pipeline() -> object:
    """The level-2 recipe (one-hot + LinearRegression) fitted on 5,000 synthetic January trips."""
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline

    from taxi_common.data import load_trips
    from taxi_common.features import TripFeaturizer
    from taxi_common.prepare import TARGET, prepare_trips

    settings = Settings(workbook_home=Path("/nonexistent-not-used"))
    train = prepare_trips(load_trips("2021-01", settings=settings, n_rows=5000), "green")
    model = Pipeline([("featurize", TripFeaturizer()), ("regress", LinearRegression())])
    return model.fit(train[list(FEATURE_COLUMNS)], train[TARGET])


def _month_with_small_row_groups(tmp_path: Path, rows: int = 9000, group: int = 2000) -> Path:
    """A synthetic March with a row group every ``group`` rows, and two rows the service refuses."""
    from taxi_common.synthetic import generate_month

    trips = generate_month("2021-03", n_rows=rows, scenario="data-quality")
    trips.loc[5, "trip_distance"] = 250.0  # beyond 200 miles
    path = tmp_path / "march.parquet"
    pq.write_table(pa.Table.from_pandas(trips, preserve_index=False), path, row_group_size=group)
    return path


def test_scores_every_trip_row_group_by_row_group_like_predict(tmp_path: Path,
                                                                pipeline: object) -> None:
    from level2_devops.service.model_source import serving_model
    from level4_deployment.traffic import ride_id_for

    path = _month_with_small_row_groups(tmp_path)
    out = tmp_path / "out" / "scores.parquet"
    seen: list[tuple[int, int]] = []
    result = score_file(path, serving_model(pipeline, "7"), "7", out,
                        progress=lambda done, total: seen.append((done, total)))
    assert result.row_groups == 5 and seen[-1] == (5, 5)
    scores = pd.read_parquet(out)
    trips = pd.read_parquet(path)
    assert result.rows == len(scores) == len(trips) == 9000
    assert tuple(scores.columns) == OUTPUT_COLUMNS
    assert (scores["model_version"] == "7").all()
    # Refused rows (missing zones of the data-quality scenario, the 250-mile trip) get no
    # prediction; every other row gets exactly what the pipeline predicts.
    servable = (trips["PULocationID"].notna() & trips["DOLocationID"].notna()
                & trips["trip_distance"].between(0, 200)).to_numpy()
    assert not servable[5] and (~servable).sum() > 1
    assert result.scored == servable.sum() == scores["predicted_duration"].notna().sum()
    frame = trips.loc[servable, list(FEATURE_COLUMNS)].astype(
        {"PULocationID": "int64", "DOLocationID": "int64"})
    np.testing.assert_allclose(scores.loc[servable, "predicted_duration"],
                               pipeline.predict(frame), rtol=1e-12)
    elapsed = trips["lpep_dropoff_datetime"] - trips["lpep_pickup_datetime"]
    actual = elapsed.dt.total_seconds() / 60
    np.testing.assert_allclose(scores["actual_duration"], actual)
    np.testing.assert_allclose(scores["difference"].dropna(),
                               (scores["predicted_duration"] - scores["actual_duration"]).dropna())
    # the ids a replay of the same trips would carry
    assert scores["ride_id"].tolist() == ride_id_for(trips).tolist()
    assert not list(out.parent.glob(".*"))  # no parts or temporary files left behind
    # one file written by one writer: a row group of output per row group of input
    written = pq.ParquetFile(out)
    assert written.metadata.num_row_groups == 5
    assert written.schema_arrow.field("ride_id").type == pa.string()
    assert written.schema_arrow.field("PULocationID").type == pa.int64()


def test_synthetic_month_file_is_written_once_and_reused(settings: Settings) -> None:
    first = month_file("2021-03", settings, n_rows=3000)
    stamp = first.stat().st_mtime_ns
    again = month_file("2021-03", settings, n_rows=3000)
    assert again == first and again.stat().st_mtime_ns == stamp
    assert pq.ParquetFile(first).metadata.num_rows == 3000
    assert month_file("2021-03", settings, n_rows=3000, scenario="congestion") != first


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"source": "s3"}, "unknown data source"),
    ({"color": "yellow"}, "green taxi schema"),
    ({"source": "tlc", "n_rows": 10}, "--rows applies to synthetic"),
])
def test_bad_month_requests_fail_in_one_line(settings: Settings, kwargs: dict,
                                             message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        month_file("2021-03", settings, **kwargs)
