"""Model sources and the fast paths of the service: lookup = pipeline.predict, bulk histogram."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, Histogram
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from level2_devops.app import create_app, predictions_body
from level2_devops.model_store import save_model
from level2_devops.service.metrics import DURATION_BUCKETS, observe_many
from level2_devops.service.model_source import (
    LinearLookupModel,
    LoadedModel,
    ModelFileSource,
    ModelSource,
    ModelUnavailableError,
    PipelineModel,
    linear_lookup,
    serving_model,
)
from level2_devops.service.rides import RideBatch
from level2_devops.training import fit_model
from taxi_common.features import TripFeaturizer


def _all_pairs(seed: int = 0) -> RideBatch:
    """Every valid zone pair, with random distances of 0 to 200 miles."""
    zones = np.arange(1, 266, dtype=np.int64)
    pu, do = (a.ravel() for a in np.meshgrid(zones, zones, indexing="ij"))
    distance = np.random.default_rng(seed).uniform(0, 200, len(pu)).round(2)
    return RideBatch(pu, do, distance)


def _pipeline_predict(pipeline, rides: RideBatch) -> np.ndarray:
    return np.concatenate([pipeline.predict(rides.to_frame().iloc[i:i + 5000])
                           for i in range(0, len(rides), 5000)])


@pytest.mark.parametrize("name", ["linear", "ridge", "lasso"])
def test_the_lookup_equals_pipeline_predict_bit_for_bit(service_trips, name) -> None:
    pipeline = fit_model(name, service_trips)
    model = serving_model(pipeline, "v7")
    assert isinstance(model, LinearLookupModel) and model.version == "v7"
    rides = _all_pairs()
    assert np.array_equal(model.predict(rides), _pipeline_predict(pipeline, rides))


def test_the_lookup_serves_the_separate_zone_variant_too(service_trips) -> None:
    pipeline = Pipeline([("featurize", TripFeaturizer(combine_zones=False)),
                         ("regress", LinearRegression())])
    pipeline.fit(service_trips[["PULocationID", "DOLocationID", "trip_distance"]],
                 service_trips["duration"])
    model = serving_model(pipeline, "v1")
    assert isinstance(model, LinearLookupModel)
    rides = _all_pairs(seed=1)
    assert np.array_equal(model.predict(rides), _pipeline_predict(pipeline, rides))


def test_a_tree_model_is_served_by_its_pipeline(service_trips) -> None:
    pipeline = fit_model("hist_gb", service_trips, {"max_iter": 20})
    assert linear_lookup(pipeline, "v1") is None
    model = serving_model(pipeline, "v1")
    assert isinstance(model, PipelineModel)
    rides = RideBatch(np.array([130, 74, 1]), np.array([205, 75, 265]), np.array([3.6, 1.0, 0]))
    assert np.array_equal(model.predict(rides), pipeline.predict(rides.to_frame()))


def test_a_tree_model_file_serves_the_same_predictions_over_http(
        service_trips, tmp_path: Path) -> None:
    pipeline = fit_model("random_forest", service_trips, {"n_estimators": 5})
    path = save_model(pipeline, {"model": "random_forest"}, tmp_path)
    rides = [{"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66},
             {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 0.8}]
    response = create_app(ModelFileSource(path)).test_client().post("/predict", json=rides)
    assert [p["duration"] for p in response.get_json()] == list(
        pipeline.predict(pd.DataFrame(rides)))


def test_sources_and_models_satisfy_the_protocols(linear_model_file: Path) -> None:
    source = ModelFileSource(linear_model_file)
    assert isinstance(source, ModelSource)
    model = source.load()
    assert isinstance(model, LoadedModel)
    assert source.load() is model  # loaded once


def test_a_missing_or_corrupt_model_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        ModelFileSource(tmp_path / "nothing.pkl").load()
    corrupt = tmp_path / "taxi-duration-v1.pkl"
    corrupt.write_bytes(b"not a pickle")
    with pytest.raises(ModelUnavailableError, match="cannot be read"):
        ModelFileSource(corrupt).load()


def test_observe_many_equals_one_observe_per_value() -> None:
    values = np.concatenate([np.random.default_rng(0).uniform(-300, 7200, 2000),
                             np.array(DURATION_BUCKETS)])  # values exactly on the bounds too
    one, many = CollectorRegistry(), CollectorRegistry()
    by_one = Histogram("h", "h", buckets=DURATION_BUCKETS, registry=one)
    by_many = Histogram("h", "h", buckets=DURATION_BUCKETS, registry=many)
    for v in values:
        by_one.observe(float(v))
    observe_many(by_many, values)

    def samples(registry):
        return {(s.name, tuple(s.labels.items())): s.value
                for m in registry.collect() for s in m.samples if not s.name.endswith("created")}

    expected, got = samples(one), samples(many)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


@pytest.mark.parametrize("fields", [
    {"model_version": "1"},
    {"model_version": 'odd "version" \\ name, with a comma'},
    {"model_version": "3", "variant": "challenger", "request_id": "0f1e2d,3c4b"},
], ids=["version", "odd-version", "variant-and-request-id"])
@pytest.mark.parametrize("minutes", [
    np.array([12.5, 1e-7, 59.99999999999999, 3.0, 1234567.125]), np.array([7.25])],
    ids=["five", "one"])
def test_the_body_is_the_json_of_the_predictions(fields, minutes) -> None:
    body = json.loads(predictions_body(minutes, fields, single=False))
    assert body == [{"duration": m, **fields} for m in minutes.tolist()]
    assert [list(b) for b in body] == [["duration", *fields]] * len(minutes)  # field order
    single = json.loads(predictions_body(minutes[:1], fields, single=True))
    assert single == {"duration": minutes[0], **fields}
