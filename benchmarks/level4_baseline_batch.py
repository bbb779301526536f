"""The classic per-month batch scoring script of the course, for comparison only.

    python -m benchmarks.level4_baseline_batch MODEL_BIN INPUT.parquet OUTPUT.parquet [VERSION]

The MLOps Zoomcamp "score.py" batch deployment recipe with a pickled ``(dv, model)``: read the
month's parquet file whole, compute the duration, ``df[categorical].astype(str)``, one dict per
trip (``to_dict(orient="records")``), ``DictVectorizer.transform`` + ``model.predict``, a
``str(uuid.uuid4())`` ride id per trip, and write the result to parquet. The course also keeps
only trips of 1 to 60 minutes; that filter is left out here so that both sides of
``bench_level4_batch`` score (and write) every trip of the file.
"""

from __future__ import annotations

import pickle
import sys
import uuid

import pandas as pd


def generate_uuids(n: int) -> list[str]:
    """One random ride id per trip."""
    return [str(uuid.uuid4()) for _ in range(n)]


def read_dataframe(filename: str) -> pd.DataFrame:
    """The month's trips with their duration in minutes and a ride id."""
    df = pd.read_parquet(filename)
    df["duration"] = df.lpep_dropoff_datetime - df.lpep_pickup_datetime
    df["duration"] = df.duration.dt.total_seconds() / 60
    df["ride_id"] = generate_uuids(len(df))
    return df


def prepare_dictionaries(df: pd.DataFrame) -> list[dict]:
    """The course's features: PU_DO as a string and the distance, one dict per trip."""
    categorical = ["PULocationID", "DOLocationID"]
    df[categorical] = df[categorical].astype(str)
    df["PU_DO"] = df["PULocationID"] + "_" + df["DOLocationID"]
    return df[["PU_DO", "trip_distance"]].to_dict(orient="records")


def apply_model(input_file: str, model_file: str, output_file: str,
                model_version: str = "baseline") -> int:
    """Score ``input_file`` with the pickled ``(dv, model)`` into ``output_file``; rows written."""
    df = read_dataframe(input_file)
    dicts = prepare_dictionaries(df)
    with open(model_file, "rb") as f_in:
        dv, model = pickle.load(f_in)
    y_pred = model.predict(dv.transform(dicts))

    df_result = pd.DataFrame()
    df_result["ride_id"] = df["ride_id"]
    df_result["lpep_pickup_datetime"] = df["lpep_pickup_datetime"]
    df_result["PULocationID"] = df["PULocationID"]
    df_result["DOLocationID"] = df["DOLocationID"]
    df_result["actual_duration"] = df["duration"]
    df_result["predicted_duration"] = y_pred
    df_result["diff"] = df_result["actual_duration"] - df_result["predicted_duration"]
    df_result["model_version"] = model_version
    df_result.to_parquet(output_file, index=False)
    return len(df_result)


if __name__ == "__main__":
    apply_model(*sys.argv[1:5])
