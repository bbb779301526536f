"""Level 3's plain functions, without a Prefect server: search, data cache, config, registry."""

from __future__ import annotations

import pandas as pd
import pytest

from level2_devops.models import model_spec
from level2_devops.training import load_prepared_month
from level3_training.data import (
    DataValidationError,
    MonthRequest,
    cache_key,
    cache_path,
    prepared_month,
    validate_prepared,
)
from level3_training.pipeline import TrainConfig, parse_models
from level3_training.search import grid_size, sample_trials
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
