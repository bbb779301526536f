"""The synthetic generator: exact schema, determinism, scenarios, realism against the real files.

Realism tests compare synthetic 2021-01 (train) → 2021-02 (validation) with the real months read
directly from ``tlc_dir``; everything that costs a fit is computed once per module.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from level2_devops.models import build_model
from taxi_common import synthetic
from taxi_common.errors import BadInputError
from taxi_common.features import TripFeaturizer
from taxi_common.metrics import rmse
from taxi_common.prepare import add_duration, filter_outliers, prepare_trips, training_frame
from taxi_common.scenarios import Scenario
from taxi_common.schema import GREEN_DTYPES
from tests.figures import REAL_KEPT_ROWS, REAL_LINEAR_VAL_RMSE, REAL_RAW_ROWS, REAL_ZONE_PAIRS

SMALL = 20_000
NULL_BLOCK = ("payment_type", "passenger_count", "RatecodeID", "trip_type",
              "store_and_fwd_flag", "congestion_surcharge")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pair_keys(df: pd.DataFrame) -> pd.Series:
    return df.PULocationID.astype(int) * 1000 + df.DOLocationID.astype(int)


# --- schema, profile, determinism --------------------------------------------------------------


def test_schema_is_exactly_the_green_tlc_schema() -> None:
    df = synthetic.generate_month("2021-01", n_rows=3_000)
    assert list(df.columns) == list(GREEN_DTYPES)
    assert {c: str(t) for c, t in df.dtypes.items()} == GREEN_DTYPES
    assert len(df) == 3_000
    assert set(df.store_and_fwd_flag.unique()) <= {"N", "Y", None}
    assert df.ehail_fee.isna().all() and df.ehail_fee.map(type).eq(type(None)).all()
    assert df.PULocationID.between(1, 265).all() and df.DOLocationID.between(1, 265).all()
    pickup = df.lpep_pickup_datetime
    assert pickup.min() >= pd.Timestamp("2021-01-01") and pickup.max() < pd.Timestamp("2021-02-01")
    assert (df.lpep_dropoff_datetime >= pickup).all()


def test_parquet_round_trip_keeps_the_schema(tmp_path: Path) -> None:
    path = synthetic.write_month("2021-02", tmp_path / "sub" / "m.parquet", n_rows=2_000)
    back = pd.read_parquet(path)
    assert {c: str(t) for c, t in back.dtypes.items()} == GREEN_DTYPES
    pd.testing.assert_frame_equal(back, synthetic.generate_month("2021-02", n_rows=2_000))
    assert [p.name for p in path.parent.iterdir()] == ["m.parquet"], "a temporary file remains"
    assert path.stat().st_mode & 0o777 == 0o644


def test_same_inputs_give_the_same_frame_and_bytes(tmp_path: Path) -> None:
    a = synthetic.write_month("2021-01", tmp_path / "a.parquet", seed=3, n_rows=SMALL)
    b = synthetic.write_month("2021-01", tmp_path / "b.parquet", seed=3, n_rows=SMALL)
    assert _sha256(a) == _sha256(b)
    pd.testing.assert_frame_equal(synthetic.generate_month("2021-01", seed=3, n_rows=SMALL),
                                  synthetic.generate_month("2021-01", seed=3, n_rows=SMALL))


def test_seed_month_and_scenario_change_the_data(tmp_path: Path) -> None:
    base = synthetic.write_month("2021-01", tmp_path / "base.parquet", n_rows=SMALL)
    other_seed = synthetic.write_month("2021-01", tmp_path / "s1.parquet", seed=1, n_rows=SMALL)
    scenario = synthetic.write_month("2021-01", tmp_path / "c.parquet", scenario="congestion",
                                     n_rows=SMALL)
    assert len({_sha256(base), _sha256(other_seed), _sha256(scenario)}) == 3
    jan = synthetic.generate_month("2021-01", n_rows=SMALL)
    mar = synthetic.generate_month("2021-03", n_rows=SMALL)
    assert not np.array_equal(jan.PULocationID.to_numpy(), mar.PULocationID.to_numpy())


def test_default_volume_is_a_real_months_volume() -> None:
    assert 70_000 <= synthetic.default_rows("2021-01") <= 85_000  # real 2021-01: 76,518
    assert synthetic.default_rows("2021-02") < synthetic.default_rows("2021-01")  # 28 days


def test_bad_row_count_is_a_clear_error() -> None:
    with pytest.raises(BadInputError, match="rows"):
        synthetic.generate_month("2021-01", n_rows=-5)


def test_profile_is_small_aggregates_and_zone_table_is_complete() -> None:
    profile = synthetic.load_profile()
    size = len(json.dumps(profile, separators=(",", ":")))
    assert size < 300_000
    assert profile["months"] == ["2021-01", "2021-02", "2021-03"]
    assert set(profile["segments"]) == {"street", "dispatch"}
    zones = synthetic.zone_table()
    assert list(zones.columns) == ["LocationID", "Borough", "Zone", "service_zone"]
    assert len(zones) == 265 and zones.LocationID.is_unique
    assert zones.set_index("LocationID").loc[74, "Zone"] == "East Harlem North"


@pytest.mark.slow
def test_one_million_rows_generate() -> None:
    df = synthetic.generate_month("2021-03", n_rows=1_000_000)
    assert len(df) == 1_000_000
    assert list(df.columns) == list(GREEN_DTYPES)


def test_data_quirks_are_reproduced() -> None:
    df = add_duration(synthetic.generate_month("2021-01"))
    null_rows = df.payment_type.isna()
    assert 0.44 <= null_rows.mean() <= 0.50  # real 2021: ≈47%
    for col in NULL_BLOCK:  # … null together
        assert df[col].isna().eq(null_rows).all(), col
    assert 0.03 <= (df.trip_distance == 0).mean() <= 0.06
    absurd = df.trip_distance > 1000
    assert absurd.sum() >= 10 and null_rows[absurd].mean() > 0.9
    assert df.VendorID[null_rows].eq(2).mean() > 0.99
    assert 0.01 <= (df.duration < 1).mean() <= 0.03
    assert df.lpep_pickup_datetime.dt.hour.value_counts().idxmax() in range(8, 17)


# --- scenarios ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def february() -> pd.DataFrame:
    """Baseline synthetic February with durations."""
    return add_duration(synthetic.generate_month("2021-02", n_rows=30_000))


def _scenario(name: str, strength: float = 1.0, start_day: int = 15) -> pd.DataFrame:
    spec = Scenario(name=name, start_day=start_day, strength=strength)
    return add_duration(synthetic.generate_month("2021-02", scenario=spec, n_rows=30_000))


def _after(df: pd.DataFrame, day: int = 15) -> pd.Series:
    return df.lpep_pickup_datetime.dt.day >= day


@pytest.mark.parametrize("name", ["baseline", "congestion", "hotspot", "data-quality"])
def test_strength_zero_is_the_baseline(name: str, february: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(_scenario(name, strength=0.0), february)


def test_congestion_slows_affected_trips_from_the_start_day_only(february: pd.DataFrame) -> None:
    jammed = _scenario("congestion")
    m = synthetic._model()
    b = m.boroughs.index(synthetic.CONGESTION_BOROUGH)
    touches = pd.Series((m.zone_borough[february.PULocationID] == b)
                        | (m.zone_borough[february.DOLocationID] == b))
    after = _after(february)
    ratio = jammed.duration[touches & after].mean() / february.duration[touches & after].mean()
    assert ratio > 1.3
    pd.testing.assert_series_equal(jammed.duration[~after], february.duration[~after])
    pd.testing.assert_series_equal(jammed.duration[~touches], february.duration[~touches])
    pd.testing.assert_series_equal(jammed.trip_distance, february.trip_distance)


def test_hotspot_moves_demand_to_new_pairs(february: pd.DataFrame) -> None:
    hot = _scenario("hotspot")
    new_pairs = set((synthetic.hotspot_pairs() @ np.array([1000, 1])).tolist())
    in_base = _pair_keys(february).isin(new_pairs)
    in_hot = _pair_keys(hot).isin(new_pairs)
    after = _after(hot)
    assert in_base.mean() < 0.005  # rare in the baseline …
    assert in_hot[after].mean() > 0.15  # … common after the start day
    assert in_hot[~after].mean() == in_base[~after].mean()


def test_data_quality_adds_nulls_and_wrong_units(february: pd.DataFrame) -> None:
    bad = _scenario("data-quality")
    after = _after(bad)
    for col in synthetic.DQ_NULL_COLUMNS:
        assert bad[col][after].isna().mean() > february[col][after].isna().mean() + 0.10, col
        assert bad[col][~after].isna().mean() == february[col][~after].isna().mean()
    base_d, bad_d = february.trip_distance[after], bad.trip_distance[after]
    assert bad_d.median() > base_d.median() * 1.05  # some distances in km
    assert (bad_d > 1000).mean() > (base_d > 1000).mean() + 0.01  # some in metres
    assert bad.trip_distance.notna().all()  # the model's inputs stay usable


# --- realism against the real months ----------------------------------------------------------


def _figures(train_raw: pd.DataFrame, valid_raw: pd.DataFrame) -> dict[str, float]:
    """Kept share, duration mean/std, distinct pairs and the validation RMSE of three models."""
    train, valid = prepare_trips(train_raw), prepare_trips(valid_raw)
    x_train, y_train = training_frame(train)
    x_valid, y_valid = training_frame(valid)
    separate = Pipeline([("featurize", TripFeaturizer(combine_zones=False)),
                         ("regress", LinearRegression())])
    out = {"kept": len(filter_outliers(add_duration(train_raw))) / len(train_raw),
           "mean": train.duration.mean(), "std": train.duration.std(),
           "pairs": _pair_keys(train).nunique()}
    for name, model in (("separate", separate), ("linear", build_model("linear")),
                        ("hist_gb", build_model("hist_gb"))):
        model.fit(x_train, y_train)
        out[name] = rmse(y_valid, model.predict(x_valid))
    return out


@pytest.fixture(scope="module")
def real_figures(tlc_dir: Path) -> dict[str, float]:
    return _figures(pd.read_parquet(tlc_dir / "green_tripdata_2021-01.parquet"),
                    pd.read_parquet(tlc_dir / "green_tripdata_2021-02.parquet"))


@pytest.fixture(scope="module")
def synthetic_figures() -> dict[str, float]:
    return _figures(synthetic.generate_month("2021-01"), synthetic.generate_month("2021-02"))


@pytest.mark.tlc
def test_kept_fraction_matches_real(real_figures: dict, synthetic_figures: dict) -> None:
    kept, raw = REAL_KEPT_ROWS["2021-01"], REAL_RAW_ROWS["2021-01"]
    assert real_figures["kept"] == pytest.approx(kept / raw)
    assert abs(synthetic_figures["kept"] - real_figures["kept"]) <= 0.02


@pytest.mark.tlc
@pytest.mark.parametrize("figure", ["mean", "std"])
def test_duration_mean_and_std_match_real(figure: str, real_figures: dict,
                                          synthetic_figures: dict) -> None:
    assert synthetic_figures[figure] == pytest.approx(real_figures[figure], rel=0.15)


@pytest.mark.tlc
def test_distinct_zone_pairs_match_real(real_figures: dict, synthetic_figures: dict) -> None:
    assert real_figures["pairs"] == REAL_ZONE_PAIRS
    assert synthetic_figures["pairs"] == pytest.approx(real_figures["pairs"], rel=0.10)


@pytest.mark.tlc
def test_reference_recipe_rmse_matches_real(real_figures: dict, synthetic_figures: dict) -> None:
    assert real_figures["linear"] == REAL_LINEAR_VAL_RMSE.approx()
    assert synthetic_figures["linear"] == pytest.approx(real_figures["linear"], rel=0.20)


@pytest.mark.tlc
def test_model_ranking_matches_real(real_figures: dict, synthetic_figures: dict) -> None:
    ranking = ["separate", "linear", "hist_gb"]  # worst to best
    for figures in (real_figures, synthetic_figures):
        assert sorted(ranking, key=lambda name: -figures[name]) == ranking
