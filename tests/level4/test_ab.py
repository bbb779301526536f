"""The A/B analysis on real synthetic trips and real fitted models (seeded, no server)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline, make_pipeline

from level4_deployment import ab
from level4_deployment.traffic import month_traffic
from taxi_common.errors import BadInputError
from taxi_common.features import TripFeaturizer
from taxi_common.settings import Settings

FEATURES = ["PULocationID", "DOLocationID", "trip_distance"]


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic 2021-01 (training) and 2021-02 (the served traffic), as traffic frames."""
    settings = Settings(workbook_home=tmp_path_factory.mktemp("ab") / "workbook")
    return (month_traffic("2021-01", settings=settings, rows=30_000),
            month_traffic("2021-02", settings=settings, rows=20_000))


def fit_linear(train: pd.DataFrame) -> Pipeline:
    return make_pipeline(TripFeaturizer(), LinearRegression()).fit(train[FEATURES],
                                                                   train["duration"])


def served(traffic: pd.DataFrame, champion: Pipeline, challenger: Pipeline, *,
           shadow: bool = False) -> pd.DataFrame:
    """The joined log as the service writes it: a sticky half of the rides (by ride id) to the
    challenger, the other model's prediction as the shadow when ``shadow``."""
    to_challenger = traffic["ride_id"].map(lambda r: int(r[:8], 16) % 2 == 1).to_numpy()
    p_champion = champion.predict(traffic[FEATURES])
    p_challenger = challenger.predict(traffic[FEATURES])
    return pd.DataFrame({
        "variant": np.where(to_challenger, "challenger", "champion"),
        "model_version": np.where(to_challenger, "4", "3"),
        "prediction": np.where(to_challenger, p_challenger, p_champion),
        "shadow_prediction": np.where(to_challenger, p_champion, p_challenger) if shadow
        else np.nan,
        "duration": traffic["duration"].to_numpy(),
    })


def test_default_sample_size_is_the_power_calculation() -> None:
    assert ab.required_samples(0.1, 0.05, 0.8) == ab.DEFAULT_MIN_SAMPLES == 1571
    assert "1570.73" in ab.POWER_CALCULATION
    from statsmodels.stats.power import TTestIndPower

    solved = TTestIndPower().solve_power(effect_size=0.1, alpha=0.05, power=0.8)
    assert f"{solved:.2f}" in ab.POWER_CALCULATION


def test_a_challenger_that_predicts_the_training_mean_is_found_worse(months) -> None:
    train, traffic = months
    mean_model = DummyRegressor(strategy="mean").fit(train[FEATURES], train["duration"])
    report = ab.ab_report(served(traffic, fit_linear(train), mean_model))
    assert report["analysed_per_variant"] == ab.DEFAULT_MIN_SAMPLES
    assert report["variants"]["champion"]["n"] > ab.DEFAULT_MIN_SAMPLES
    test = report["test"]
    assert report["verdict"] == ab.CHALLENGER_WORSE
    assert test["p_value"] < 1e-6 and 0 < test["ci_low"] < test["mae_difference"] < test["ci_high"]
    assert report["paired"] is None  # no shadow predictions logged


def test_two_equally_good_models_are_not_declared_different(months) -> None:
    train, traffic = months
    first, second = fit_linear(train.iloc[0::2]), fit_linear(train.iloc[1::2])
    report = ab.ab_report(served(traffic, first, second))
    test = report["test"]
    assert report["verdict"] == ab.NO_DIFFERENCE
    assert test["p_value"] > ab.ALPHA and test["ci_low"] < 0 < test["ci_high"]
    assert abs(test["mae_difference"]) < 0.5


def test_before_the_fixed_sample_size_there_is_no_winner(months) -> None:
    train, traffic = months
    mean_model = DummyRegressor(strategy="mean").fit(train[FEATURES], train["duration"])
    early = served(traffic.iloc[:2000], fit_linear(train), mean_model)  # ~1,000 per variant
    report = ab.ab_report(early)
    assert report["verdict"] == ab.NOT_ENOUGH_DATA and report["test"] is None
    assert report["variants"]["challenger"]["mae"] > report["variants"]["champion"]["mae"]
    assert "not enough data" in ab.format_report(report)
    # the same rides with a smaller horizon, fixed in advance, do give a verdict
    assert ab.ab_report(early, min_samples=500)["verdict"] == ab.CHALLENGER_WORSE


def test_shadow_predictions_give_a_paired_analysis(months) -> None:
    train, traffic = months
    mean_model = DummyRegressor(strategy="mean").fit(train[FEATURES], train["duration"])
    report = ab.ab_report(served(traffic, fit_linear(train), mean_model, shadow=True))
    paired = report["paired"]
    assert paired["available"] == len(traffic) and paired["analysed"] == ab.DEFAULT_MIN_SAMPLES
    assert paired["verdict"] == ab.CHALLENGER_WORSE and paired["p_value"] < 1e-6
    # the same rides under both models: a narrower interval than the unpaired one
    unpaired = report["test"]
    assert paired["ci_high"] - paired["ci_low"] < unpaired["ci_high"] - unpaired["ci_low"]
    assert "paired (shadow" in ab.format_report(report)


def test_equally_good_models_on_the_same_rides_are_not_declared_different(months) -> None:
    train, traffic = months
    first, second = fit_linear(train.iloc[0::2]), fit_linear(train.iloc[1::2])
    paired = ab.ab_report(served(traffic, first, second, shadow=True))["paired"]
    assert paired["verdict"] == ab.NO_DIFFERENCE and paired["ci_low"] < 0 < paired["ci_high"]


def test_rows_without_actuals_are_left_out(months) -> None:
    train, traffic = months
    joined = served(traffic.iloc[:600], fit_linear(train), fit_linear(train))
    joined.loc[:99, "duration"] = np.nan
    counts = ab.ab_report(joined, min_samples=10)["variants"]
    assert counts["champion"]["n"] + counts["challenger"]["n"] == 500


def test_min_samples_below_two_is_refused(months) -> None:
    with pytest.raises(BadInputError, match="--min-samples 1"):
        ab.ab_report(pd.DataFrame(columns=["variant", "duration"]), min_samples=1)


def test_peeking_inflates_false_positives_a_fixed_horizon_does_not(months) -> None:
    train, traffic = months
    errors = np.abs(fit_linear(train).predict(traffic[FEATURES]) - traffic["duration"])
    rates = ab.peeking_false_positives(errors.to_numpy(), looks=10, repeats=400)
    assert rates["fixed_horizon"] < 0.09  # about alpha = 0.05 (400 repeats: +-0.02)
    assert rates["peeking"] > 2 * rates["fixed_horizon"]
