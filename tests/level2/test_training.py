"""Level 2's training functions: each step of the level-1 recipe, tested on its own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from level2_devops.model_store import load_model
from level2_devops.training import (
    TrainConfig,
    check_config,
    check_params,
    data_fingerprint,
    effective_params,
    evaluate,
    fit_model,
    load_prepared_month,
    parse_params,
    parse_value,
    train_and_save,
)
from taxi_common.errors import BadInputError
from taxi_common.prepare import FEATURE_COLUMNS, TARGET
from tests.figures import (
    REAL_KEPT_ROWS,
    REAL_LINEAR_TRAIN_RMSE,
    REAL_LINEAR_VAL_RMSE,
    REAL_RAW_ROWS,
)

# --- load_prepared_month --------------------------------------------------------------------------

def _assert_prepared(df: pd.DataFrame) -> None:
    """The classic preparation's promises: duration in [1, 60], zone categoricals, features."""
    assert set((*FEATURE_COLUMNS, TARGET)) <= set(df.columns)
    assert df[TARGET].between(1, 60).all()
    assert isinstance(df["PULocationID"].dtype, pd.CategoricalDtype)
    assert isinstance(df["DOLocationID"].dtype, pd.CategoricalDtype)
    assert list(df.index) == list(range(len(df)))


def test_load_prepared_month_synthetic_is_prepared_and_capped(settings) -> None:
    df = load_prepared_month("2021-01", settings=settings, n_rows=2_000)
    _assert_prepared(df)
    assert 1_500 < len(df) <= 2_000  # the filter drops a few percent, never most


def test_load_prepared_month_synthetic_is_deterministic(settings) -> None:
    first = load_prepared_month("2021-01", settings=settings, n_rows=1_000, seed=3)
    again = load_prepared_month("2021-01", settings=settings, n_rows=1_000, seed=3)
    pd.testing.assert_frame_equal(first, again)


@pytest.mark.tlc
def test_load_prepared_month_real_file_keeps_the_reference_rows(tlc_settings) -> None:
    df = load_prepared_month("2021-01", settings=tlc_settings, source="tlc")
    _assert_prepared(df)
    assert len(df) == REAL_KEPT_ROWS["2021-01"]  # the reference recipe's figure


def test_load_prepared_month_rejects_a_bad_month(settings) -> None:
    with pytest.raises(BadInputError, match="2021-13"):
        load_prepared_month("2021-13", settings=settings)


# --- data_fingerprint -----------------------------------------------------------------------------

def test_fingerprint_is_stable_for_equal_data(prepared_trips) -> None:
    fingerprint = data_fingerprint(prepared_trips)
    assert fingerprint == data_fingerprint(prepared_trips.copy(deep=True))
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0


def test_fingerprint_ignores_columns_the_model_does_not_see(prepared_trips) -> None:
    changed = prepared_trips.assign(VendorID=99, extra_column="x")
    assert data_fingerprint(changed) == data_fingerprint(prepared_trips)


def test_fingerprint_ignores_how_zones_are_typed(prepared_trips) -> None:
    as_ints = prepared_trips.astype({"PULocationID": "int64", "DOLocationID": "int64"})
    assert data_fingerprint(as_ints) == data_fingerprint(prepared_trips)


@pytest.mark.parametrize("column", [*FEATURE_COLUMNS, TARGET])
def test_fingerprint_changes_when_one_value_changes(prepared_trips, column) -> None:
    changed = prepared_trips.astype({"PULocationID": "int64", "DOLocationID": "int64"})
    changed.loc[7, column] = changed.loc[7, column] + 1
    assert data_fingerprint(changed) != data_fingerprint(prepared_trips)


def test_fingerprint_changes_with_row_order_and_row_count(prepared_trips) -> None:
    reversed_rows = prepared_trips.iloc[::-1].reset_index(drop=True)
    assert data_fingerprint(reversed_rows) != data_fingerprint(prepared_trips)
    assert data_fingerprint(prepared_trips.iloc[:-1]) != data_fingerprint(prepared_trips)


# --- fit_model and evaluate -----------------------------------------------------------------------

def test_fit_model_returns_a_fitted_catalogue_pipeline(prepared_trips) -> None:
    pipeline = fit_model("ridge", prepared_trips, {"alpha": 2.5})
    assert isinstance(pipeline, Pipeline)
    assert [name for name, _ in pipeline.steps] == ["featurize", "regress"]
    assert pipeline.named_steps["regress"].alpha == 2.5
    predicted = pipeline.predict(prepared_trips[list(FEATURE_COLUMNS)])
    assert predicted.shape == (len(prepared_trips),) and np.isfinite(predicted).all()


def test_fit_model_learns_the_relation(prepared_trips) -> None:
    """Durations are 2 + 3.5 x distance plus noise of sd 2: a linear fit gets close to sd 2."""
    pipeline = fit_model("linear", prepared_trips)
    residual = prepared_trips[TARGET] - pipeline.predict(prepared_trips[list(FEATURE_COLUMNS)])
    baseline = prepared_trips[TARGET] - prepared_trips[TARGET].mean()
    assert np.sqrt(np.mean(residual**2)) < 0.5 * np.sqrt(np.mean(baseline**2))


def test_fit_model_rejects_an_unknown_model(prepared_trips) -> None:
    with pytest.raises(BadInputError, match="unknown model 'nope'.*linear"):
        fit_model("nope", prepared_trips)


def test_evaluate_matches_a_hand_computation(prepared_trips, other_prepared_trips) -> None:
    pipeline = fit_model("linear", prepared_trips)
    scores = evaluate(pipeline, other_prepared_trips)
    error = (other_prepared_trips[TARGET].to_numpy()
             - pipeline.predict(other_prepared_trips[list(FEATURE_COLUMNS)]))
    assert scores["rmse"] == pytest.approx(np.sqrt(np.sum(error**2) / len(error)), rel=1e-12)
    assert scores["mae"] == pytest.approx(np.sum(np.abs(error)) / len(error), rel=1e-12)
    assert scores["rmse"] >= scores["mae"] > 0


def test_evaluate_is_zero_for_a_perfect_model(prepared_trips) -> None:
    """A target exactly linear in distance gives zero error (with a tight solver tolerance)."""
    exact = prepared_trips.assign(duration=3.0 + 2.0 * prepared_trips["trip_distance"])
    scores = evaluate(fit_model("linear", exact, {"tol": 1e-12}), exact)
    assert scores["rmse"] == pytest.approx(0, abs=1e-6)
    assert scores["mae"] == pytest.approx(0, abs=1e-6)


# --- parameters from the command line -------------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("1", 1), ("-3", -3), ("0.5", 0.5), ("1e-3", 1e-3), ("true", True), ("False", False),
    ("none", None), ("null", None), ("sqrt", "sqrt"), ("", ""),
])
def test_parse_value_gives_the_natural_type(text, value) -> None:
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_params_builds_a_typed_dict() -> None:
    assert parse_params(["alpha=0.1", "fit_intercept=false", "max_iter=500", "solver=auto"]) == {
        "alpha": 0.1, "fit_intercept": False, "max_iter": 500, "solver": "auto"}
    assert parse_params([]) == {}


@pytest.mark.parametrize("pair", ["alpha", "=1", " =2"])
def test_parse_params_rejects_a_malformed_pair(pair) -> None:
    with pytest.raises(BadInputError, match="key=value"):
        parse_params([pair])


def test_check_params_names_an_unknown_parameter_and_the_known_ones() -> None:
    assert check_params("ridge", {"alpha": 1.0}) == {"alpha": 1.0}
    with pytest.raises(BadInputError, match="unknown parameter alfa for model ridge.*alpha"):
        check_params("ridge", {"alfa": 1.0})


def test_effective_params_overrides_the_catalogue_defaults() -> None:
    assert effective_params("lasso") == {"alpha": 0.001, "max_iter": 2000}
    assert effective_params("lasso", {"alpha": 0.1}) == {"alpha": 0.1, "max_iter": 2000}


@pytest.mark.parametrize(("config", "message"), [
    (TrainConfig(train_month="2021-1"), "2021-1"),
    (TrainConfig(val_month="Feb"), "Feb"),
    (TrainConfig(source="s3"), "unknown data source 's3'"),
    (TrainConfig(model="xgboost"), "unknown model 'xgboost'"),
    (TrainConfig(model="ridge", params={"depth": 3}), "unknown parameter depth"),
    (TrainConfig(n_rows=0), "--rows"),
])
def test_check_config_rejects_unusable_settings_before_loading(config, message) -> None:
    with pytest.raises(BadInputError, match=message):
        check_config(config)


def test_the_validation_month_defaults_to_the_next_month() -> None:
    assert TrainConfig(train_month="2021-12").validation_month == "2022-01"
    assert TrainConfig(train_month="2021-01", val_month="2021-03").validation_month == "2021-03"


# --- train_and_save, end to end -------------------------------------------------------------------

def _check_run(result, settings, config) -> None:
    """The saved model predicts like the returned one and its metadata tells the truth."""
    meta = result.metadata
    train = load_prepared_month(config.train_month, settings=settings, source=config.source,
                                n_rows=config.n_rows, seed=config.seed)
    val = load_prepared_month(config.validation_month, settings=settings, source=config.source,
                              n_rows=config.n_rows, seed=config.seed)
    assert meta["data"]["train"]["rows"] == len(train)
    assert meta["data"]["val"]["rows"] == len(val)
    assert meta["data"]["train"]["fingerprint"] == data_fingerprint(train)
    assert meta["data"]["val"]["fingerprint"] == data_fingerprint(val)
    pipeline, saved_meta = load_model(result.model_path)
    assert saved_meta == meta
    assert meta["metrics"]["val_rmse"] == pytest.approx(evaluate(pipeline, val)["rmse"], rel=1e-12)
    assert meta["metrics"]["train_rmse"] == pytest.approx(evaluate(pipeline, train)["rmse"],
                                                          rel=1e-12)


def test_train_and_save_on_synthetic_data_writes_a_truthful_record(settings) -> None:
    config = TrainConfig(n_rows=3_000, model="ridge", params={"alpha": 0.3})
    lines: list[str] = []
    result = train_and_save(config, settings=settings, progress=lines.append)
    assert result.model_path.parent == settings.models_dir
    assert result.version == "v1"
    assert result.metadata["params"] == {"alpha": 0.3}
    assert result.metadata["data"]["source"] == "synthetic"
    _check_run(result, settings, config)
    assert any(line.startswith("loading 2021-01") for line in lines)
    assert any(line.startswith("fitting ridge") for line in lines)
    assert any(line.startswith("saving") for line in lines)


@pytest.mark.tlc
@pytest.mark.figures
def test_train_and_save_reproduces_the_reference_rmse_on_the_real_files(tlc_settings,
                                                                        tmp_path) -> None:
    config = TrainConfig(source="tlc", models_dir=tmp_path / "models")
    result = train_and_save(config, settings=tlc_settings)
    metrics = result.metadata["metrics"]
    assert metrics["val_rmse"] == REAL_LINEAR_VAL_RMSE.approx()
    assert metrics["train_rmse"] == REAL_LINEAR_TRAIN_RMSE.approx()
    assert result.metadata["data"]["train"]["raw_rows"] == REAL_RAW_ROWS["2021-01"]
    assert result.metadata["data"]["val"]["rows"] == REAL_KEPT_ROWS["2021-02"]
    assert result.model_path.parent == tmp_path / "models"
    _check_run(result, tlc_settings, config)


@pytest.mark.tlc
def test_train_and_save_increments_the_version(tlc_settings) -> None:
    config = TrainConfig(source="tlc", n_rows=2_000)
    first = train_and_save(config, settings=tlc_settings)
    second = train_and_save(config, settings=tlc_settings)
    assert (first.version, second.version) == ("v1", "v2")
    assert first.metadata["data"]["train"]["fingerprint"] == \
        second.metadata["data"]["train"]["fingerprint"]


def test_train_and_save_turns_a_rejected_parameter_value_into_one_line(settings) -> None:
    config = TrainConfig(n_rows=500, model="ridge", params={"alpha": -1})
    with pytest.raises(BadInputError, match="bad parameter for model ridge") as info:
        train_and_save(config, settings=settings)
    assert "\n" not in str(info.value)
    assert not settings.models_dir.exists() or not any(settings.models_dir.iterdir())
