"""Level 3's plain functions, without a Prefect server: search, data cache, config, environment,
model logging through a bound client, datasets and the model card."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from level2_devops.models import build_model, model_spec
from level2_devops.training import data_fingerprint, load_prepared_month
from level3_training.candidates import CandidateResult, TrialResult
from level3_training.data import (
    DataValidationError,
    MonthRequest,
    cache_key,
    cache_path,
    combine_months,
    prepared_month,
    validate_prepared,
)
from level3_training.model_card import MAX_DESCRIPTION, CardContext, as_description, model_card
from level3_training.pipeline import TrainConfig, parse_models
from level3_training.registry import client_for
from level3_training.runtime import apply_environment_defaults, settings_environment
from level3_training.search import grid_size, sample_trials
from level3_training.tracking import configure_tracking, log_pipeline_model, start_run
from taxi_common.errors import BadInputError
from taxi_common.settings import Settings


def test_search_starts_with_defaults_and_draws_distinct_seeded_trials() -> None:
    trials = sample_trials("hist_gb", 6, seed=3)
    assert trials[0] == {}
    assert len(trials) == 6
    drawn = [tuple(sorted(t.items())) for t in trials[1:]]
    assert len(set(drawn)) == 5
    assert sample_trials("hist_gb", 6, seed=3) == trials
    assert sample_trials("hist_gb", 6, seed=4) != trials


def test_search_is_bounded_by_the_grid_and_skips_models_without_a_space() -> None:
    assert sample_trials("linear", 10) == [{}]
    spec = model_spec("ridge")
    assert spec.defaults["alpha"] in spec.search_space["alpha"]  # so trial 0 is a grid point
    ridge = sample_trials("ridge", 100)
    assert len(ridge) == grid_size(spec.search_space) == len(spec.search_space["alpha"])
    assert len({t.get("alpha") for t in ridge}) == len(ridge)  # every grid point exactly once
    assert len(sample_trials("ridge", 3)) == 3
    assert grid_size({"a": [1, 2], "b": [1, 2, 3]}) == 6 and grid_size({}) == 1


def test_cache_key_depends_on_every_input() -> None:
    base = MonthRequest.make("2021-01", n_rows=1000)
    variants = [MonthRequest.make("2021-02", n_rows=1000), MonthRequest.make("2021-01"),
                MonthRequest.make("2021-01", n_rows=1000, seed=1),
                MonthRequest.make("2021-01", n_rows=1000, scenario="congestion"),
                MonthRequest.make("2021-01", n_rows=1000, source="tlc")]
    keys = {cache_key(r) for r in variants}
    assert cache_key(base) not in keys and len(keys) == len(variants)
    assert cache_key(MonthRequest.make("2021-01", n_rows=1000)) == cache_key(base)


def test_prepared_month_is_cached_and_equal_to_the_level2_recipe(settings: Settings) -> None:
    request = MonthRequest.make("2021-01", n_rows=2000)
    fresh, hit = prepared_month(request, settings)
    assert not hit and cache_path(request, settings).exists()
    again, hit = prepared_month(request, settings)
    assert hit
    level2 = load_prepared_month("2021-01", settings=settings, n_rows=2000)
    pd.testing.assert_frame_equal(fresh, level2)
    pd.testing.assert_frame_equal(again, level2)


def test_prepared_month_reads_the_cache_rather_than_reloading(settings: Settings) -> None:
    request = MonthRequest.make("2021-01", n_rows=2000)
    fresh, _ = prepared_month(request, settings)
    fresh.head(123).to_parquet(cache_path(request, settings), index=False)  # a marked cache
    cached, hit = prepared_month(request, settings)
    assert hit and len(cached) == 123


def test_validate_prepared_rejects_empty_months_and_missing_features() -> None:
    df = pd.DataFrame({"PULocationID": [1, 2] * 50, "DOLocationID": [3, 4] * 50,
                       "trip_distance": [1.0] * 100, "duration": [5.0] * 100})
    assert validate_prepared(df, "m") is df
    with pytest.raises(DataValidationError, match="only 10 usable trips"):
        validate_prepared(df.head(10), "m")
    df.loc[3, "trip_distance"] = None
    with pytest.raises(DataValidationError, match="1 of 100 trips have no trip_distance"):
        validate_prepared(df, "m")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"models": ("linear", "boosted_unicorn")}, "unknown model 'boosted_unicorn'"),
    ({"val_month": "2021-13"}, "not of the form YYYY-MM"),
    ({"val_month": "2021-01"}, "also a training month"),
    ({"trials": 0}, "--trials 0"),
    ({"source": "s3"}, "unknown data source 's3'"),
    ({"n_rows": 0}, "--rows 0"),
    ({"scenario": "meteor"}, "unknown scenario 'meteor'"),
])
def test_train_config_rejects_bad_input(kwargs: dict, message: str) -> None:
    config = TrainConfig(**{"train_months": ("2021-01",), "val_month": "2021-02", **kwargs})
    with pytest.raises(BadInputError, match=message):
        config.check()


def test_parse_models_splits_and_checks_names() -> None:
    assert parse_models(" linear, hist_gb ,") == ("linear", "hist_gb")
    with pytest.raises(BadInputError, match="use one of linear, ridge"):
        parse_models("linear,xgboost")


def test_level2_and_level3_take_the_same_month_request(settings: Settings) -> None:
    import taxi_common.data
    from level2_devops.training import TrainConfig as Level2Config

    assert MonthRequest is taxi_common.data.MonthRequest  # level3_training.data re-exports it
    request = Level2Config(train_month="2021-01", n_rows=300, seed=1).month_request("2021-01")
    assert request == MonthRequest("2021-01", n_rows=300, seed=1)
    config = TrainConfig(("2021-01",), "2021-02", n_rows=300, seed=1, scenario="congestion")
    assert config.month_request("2021-02") == MonthRequest.make(
        "2021-02", n_rows=300, seed=1, scenario="congestion")
    pd.testing.assert_frame_equal(load_prepared_month(request, settings=settings),
                                  load_prepared_month("2021-01", settings=settings, n_rows=300,
                                                      seed=1))


def test_train_config_refuses_what_a_month_request_refuses() -> None:
    with pytest.raises(BadInputError, match="synthetic data follows the green taxi schema"):
        TrainConfig(("2021-01",), "2021-02", color="yellow").check()


# --- the environment the flow runs in ------------------------------------------------------------

def test_settings_environment_hands_explicit_settings_to_from_env(tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "PREFECT_API_URL": "http://x/api"}
    settings = Settings(workbook_home=tmp_path / "home", tlc_base_url="file:///mirror")
    with settings_environment(settings, env):
        seen = Settings.from_env(env)
        assert "MLFLOW_TRACKING_URI" not in env  # the embedded store, as the settings say
    assert (seen.workbook_home, seen.tlc_base_url, seen.tracking_uri) == (
        settings.workbook_home, "file:///mirror", settings.tracking_uri)
    assert env == {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
                   "PREFECT_API_URL": "http://x/api"}  # restored, Prefect's own left alone


def test_environment_defaults_fill_gaps_and_overwrite_nothing(tmp_path: Path) -> None:
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7"}
    added = apply_environment_defaults(Settings(workbook_home=tmp_path), env)
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in added
    assert env["MLFLOW_DISABLE_TELEMETRY"] == added["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert apply_environment_defaults(Settings(workbook_home=tmp_path), env) == {}


# --- MLflow through a bound client ----------------------------------------------------------------

def _tiny_pipeline() -> tuple[Any, pd.DataFrame]:
    x = pd.DataFrame({"PULocationID": [1, 2, 3, 4] * 10, "DOLocationID": [5, 6, 7, 8] * 10,
                      "trip_distance": np.linspace(0.5, 9, 40)})
    return build_model("linear").fit(x, 3 * x["trip_distance"].to_numpy() + 2), x


def _log_tiny_model(settings: Settings) -> tuple[Any, str, Any]:
    """(client, run id, ModelInfo) of a tiny pipeline logged to ``settings``' store."""
    pipeline, x = _tiny_pipeline()
    client = client_for(settings.tracking_uri)
    run_id = start_run(client, configure_tracking(settings), "tiny")
    return client, run_id, log_pipeline_model(client, run_id, pipeline, x.head(3),
                                              params={"alpha": 0.5})


def test_a_model_is_logged_through_its_client_not_mlflows_global_uri(
        settings: Settings, decoy_tracking_uri: Path) -> None:
    import mlflow
    from mlflow.entities import LoggedModelStatus

    client, run_id, info = _log_tiny_model(settings)
    model = client.get_logged_model(info.model_id)
    assert model.status == LoggedModelStatus.READY and model.source_run_id == run_id
    assert model.params == {"alpha": "0.5"}
    assert info.model_uri == f"models:/{info.model_id}"
    assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [info.model_id]
    loaded = mlflow.sklearn.load_model(model.artifact_location)
    assert loaded.predict(_tiny_pipeline()[1].head(2)).shape == (2,)
    assert mlflow.get_tracking_uri() == f"sqlite:///{decoy_tracking_uri}"  # left alone
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert not decoy_tracking_uri.exists()


def test_two_threads_log_models_to_two_stores_without_mixing_them(tmp_path: Path) -> None:
    homes = [Settings(workbook_home=tmp_path / name) for name in ("a", "b")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        logged = list(pool.map(_log_tiny_model, homes))
    for settings, (_, run_id, info) in zip(homes, logged, strict=True):
        client = client_for(settings.tracking_uri)
        assert client.get_logged_model(info.model_id).source_run_id == run_id
        experiment = client.get_experiment_by_name("taxi-duration")
        assert [m.model_id for m in client.search_logged_models([experiment.experiment_id])] \
            == [info.model_id]


def test_datasets_name_their_months_and_rebuild_their_rows(settings: Settings) -> None:
    from level3_training.datasets import TaxiMonthsSource, run_datasets

    requests = [MonthRequest.make(m, n_rows=800) for m in ("2021-01", "2021-02")]
    val_request = MonthRequest.make("2021-03", n_rows=800)
    train = combine_months([prepared_month(r, settings)[0] for r in requests])
    val, _ = prepared_month(val_request, settings)
    sets = run_datasets(train, requests, data_fingerprint(train), val, val_request,
                        data_fingerprint(val))
    assert sets.training.name == "synthetic-green-2021-01+2021-02"
    assert sets.training.digest == data_fingerprint(train)
    assert json.loads(sets.training.source)["uri"] == \
        "taxi-months:synthetic/green/2021-01+2021-02?rows=800&seed=0&scenario=baseline"
    assert json.loads(sets.validation.profile)["num_rows"] == len(val)
    source = TaxiMonthsSource.from_json(sets.training.source)
    assert source.requests == tuple(requests)
    assert data_fingerprint(source.load(settings)) == sets.training.digest


# --- the model card ------------------------------------------------------------------------------

def _candidate(name: str, val_rmse: float, params: dict[str, Any]) -> CandidateResult:
    best = TrialResult(0, params, {"rmse": 5.0, "mae": 3.5}, {"rmse": val_rmse, "mae": 4.25}, 0.1)
    return CandidateResult(name, f"run-{name}", best, [best], f"models:/m-{name}", f"m-{name}")


def _card_context(source: str) -> CardContext:
    data = {"source": source, "color": "green", "train_months": ["2021-01", "2021-02"],
            "val_month": "2021-03", "train_rows": 5000, "val_rows": 2500,
            "train_fingerprint": "f-train", "val_fingerprint": "f-val", "seed": 3,
            "scenario": "congestion", "n_rows": None, "code_version": "abc123"}
    return CardContext(data, "run-pipeline", "team taxi", "taxi-duration")


def test_the_model_card_says_use_data_lineage_metrics_limits_and_owner() -> None:
    best, other = _candidate("ridge", 6.125, {"alpha": 0.3}), _candidate("linear", 7.5, {})
    card = model_card(best, [other, best], _card_context("synthetic"))
    assert card.startswith("# taxi-duration: ridge (alpha=0.3)\n")
    for heading in ("## Intended use", "## Training data and lineage", "## Metrics (minutes)",
                    "## Limitations", "## Owner\nteam taxi"):
        assert heading in card, heading
    for fact in ("2021-01, 2021-02, 5000 trips, fingerprint `f-train`", "2021-03, 2500 trips",
                 "seed 3, scenario `congestion`", "logged model `m-ridge`",
                 "candidate `run-ridge` under pipeline `run-pipeline`", "code `abc123`",
                 "| validation | 6.1250 | 4.2500 |", "linear 7.5000", "Synthetic data"):
        assert fact in card, fact
    real = model_card(best, [best], _card_context("tlc"))
    assert "Synthetic data" not in real and "scenario" not in real
    assert as_description(card) == card


def test_a_card_too_long_for_a_description_is_cut_with_a_pointer() -> None:
    long_card = "x" * (MAX_DESCRIPTION + 10)
    cut = as_description(long_card)
    assert len(cut) == MAX_DESCRIPTION and cut.rstrip().endswith("beside the model)")
