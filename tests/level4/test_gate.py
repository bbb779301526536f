"""The deployment gate on real models, a real MLflow store (SQLite) and real synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from level4_deployment.gate import (
    Candidate,
    check_signature,
    check_smoke,
    run_gate,
    signature_inputs,
    smoke_rides,
)
from taxi_common.errors import BadInputError
from taxi_common.prepare import FEATURE_COLUMNS, TARGET
from taxi_common.settings import Settings


@pytest.fixture(scope="module")
def months() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prepared synthetic 2021-01 (train) and 2021-02 (holdout), 4,000 trips each."""
    from taxi_common.data import load_trips
    from taxi_common.prepare import prepare_trips

    settings = Settings(workbook_home=Path("/nonexistent-not-used"))
    return tuple(prepare_trips(load_trips(m, settings=settings, n_rows=4000), "green")
                 for m in ("2021-01", "2021-02"))  # type: ignore[return-value]


def _fit(regressor: object, train: pd.DataFrame) -> object:
    from sklearn.pipeline import Pipeline

    from taxi_common.features import TripFeaturizer

    pipeline = Pipeline([("featurize", TripFeaturizer()), ("regress", regressor)])
    return pipeline.fit(train[list(FEATURE_COLUMNS)], train[TARGET])


def _candidate(version: str, pipeline: object, train: pd.DataFrame) -> Candidate:
    from mlflow.models import infer_signature

    example = smoke_rides()
    return Candidate(version, pipeline,
                     signature_inputs(infer_signature(example, pipeline.predict(example))))


@pytest.fixture(scope="module")
def models(months: tuple[pd.DataFrame, pd.DataFrame]) -> dict[str, Candidate]:
    from sklearn.dummy import DummyRegressor
    from sklearn.linear_model import Ridge

    train, _ = months
    return {"good": _candidate("2", _fit(Ridge(alpha=1.0), train), train),
            "mean": _candidate("3", _fit(DummyRegressor(strategy="mean"), train), train)}


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    from level3_training.tracking import configure_tracking
    from level4_deployment.gate import DEPLOY_EXPERIMENT

    settings = Settings(workbook_home=tmp_path_factory.mktemp("gate") / "workbook")
    return settings.tracking_uri, configure_tracking(settings, DEPLOY_EXPERIMENT)


def _gate(candidate: Candidate, champion: Candidate | None, holdout: pd.DataFrame,
          tracking: tuple[str, str], margin: float = 0.01):
    uri, experiment_id = tracking
    return run_gate(candidate, champion, holdout, holdout_label="synthetic 2021-02",
                    margin=margin, tracking_uri=uri, experiment_id=experiment_id)


def test_a_better_candidate_passes_and_a_worse_one_is_refused_naming_the_gate(
        models: dict[str, Candidate], months: tuple[pd.DataFrame, pd.DataFrame],
        tracking: tuple[str, str]) -> None:
    from mlflow import MlflowClient

    _, holdout = months
    better = _gate(models["good"], models["mean"], holdout, tracking)
    assert better.passed, better.lines()
    assert better.candidate_rmse < better.champion_rmse
    worse = _gate(models["mean"], models["good"], holdout, tracking)
    assert not worse.passed
    assert worse.failed == ["rmse"]
    assert "gate failed: rmse" in worse.lines()[-1]
    # The RMSE MLflow computed is the one of the native pipeline on the same holdout.
    from taxi_common.metrics import rmse

    features = holdout[list(FEATURE_COLUMNS)]
    expected = rmse(holdout[TARGET], models["good"].pipeline.predict(features))
    assert better.candidate_rmse == pytest.approx(expected, rel=1e-9)
    # Every evaluation is a run of the deploy experiment.
    uri, experiment_id = tracking
    runs = MlflowClient(tracking_uri=uri).search_runs([experiment_id])
    assert len(runs) >= 4
    assert all("root_mean_squared_error" in r.data.metrics for r in runs)


def test_the_margin_lets_a_slightly_worse_candidate_through(
        models: dict[str, Candidate], months: tuple[pd.DataFrame, pd.DataFrame],
        tracking: tuple[str, str]) -> None:
    _, holdout = months
    same = _gate(models["good"], models["good"], holdout, tracking, margin=0.0)
    assert same.passed  # equal is not worse
    assert same.candidate_rmse == same.champion_rmse


def test_first_deployment_has_no_champion(models: dict[str, Candidate],
                                          months: tuple[pd.DataFrame, pd.DataFrame],
                                          tracking: tuple[str, str]) -> None:
    report = _gate(models["good"], None, months[1], tracking)
    assert report.passed and report.champion_rmse is None


def test_smoke_gate_refuses_non_finite_and_out_of_range_predictions(
        models: dict[str, Candidate]) -> None:
    class Broken:
        def __init__(self, value: float) -> None:
            self.value = value

        def predict(self, frame: pd.DataFrame) -> np.ndarray:
            return np.full(len(frame), self.value)

    assert check_smoke(models["good"]).passed
    for value in (np.nan, np.inf, -1.0, 0.0, 500.0):
        check = check_smoke(Candidate("9", Broken(value)))
        assert not check.passed and "outside" in check.detail


def test_signature_gate(models: dict[str, Candidate]) -> None:
    good = models["good"]
    assert check_signature(good, models["mean"]).passed
    unsigned = Candidate("5", good.pipeline, None)
    assert not check_signature(unsigned, good).passed
    renamed = Candidate("6", good.pipeline, [("PU", "long"), ("DOLocationID", "long"),
                                             ("trip_distance", "double")])
    assert "not the service's" in check_signature(renamed, good).detail
    assert good.inputs == [("PULocationID", "long"), ("DOLocationID", "long"),
                           ("trip_distance", "double")]
    retyped = Candidate("7", good.pipeline, [("PULocationID", "string"), ("DOLocationID", "long"),
                                             ("trip_distance", "double")])
    assert "differ from champion" in check_signature(retyped, good).detail


def test_a_bad_margin_is_a_user_error(models: dict[str, Candidate],
                                      months: tuple[pd.DataFrame, pd.DataFrame],
                                      tracking: tuple[str, str]) -> None:
    with pytest.raises(BadInputError, match="--margin"):
        _gate(models["good"], None, months[1], tracking, margin=-0.5)
