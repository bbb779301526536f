"""The seams levels 4 and 5 plug into: a source that chooses per request, the optional
``ride_id``, extra response fields, the prediction sink, and the per-process start and close."""

from __future__ import annotations

import logging
import re
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from level2_devops.app import close_service, create_app, start_service
from level2_devops.model_store import load_model
from level2_devops.service.model_source import (
    ModelFileSource,
    ModelSource,
    PredictionRequest,
    Served,
    serving_model,
)
from level2_devops.service.sink import PredictionRecord, PredictionSink
from level2_devops.training import fit_model

RIDE = {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}
LEVEL4 = {"ACCEPT_RIDE_ID": True, "RESPONSE_FIELDS": ("variant", "request_id")}
REQUEST_ID = re.compile(r"[0-9a-f]{32}")


class ABSource:
    """Champion and challenger, chosen by a sticky hash of the first ride's ``ride_id`` (or by
    an ``X-Variant`` header), as level 4's source will; it counts its starts and closes."""

    def __init__(self, champion: Served, challenger: Served | None) -> None:
        self.champion, self.challenger = champion, challenger
        self.started = self.closed = 0

    def select(self, request: PredictionRequest) -> Served:
        if self.challenger is None:
            return self.champion
        if request.headers.get("X-Variant") == "challenger":
            return self.challenger
        ids = request.rides.ride_ids
        first = ids[0] if ids else None
        if first is not None and zlib.crc32(first.encode()) % 2:
            return self.challenger
        return self.champion

    def serving(self) -> tuple[Served, ...]:
        return (self.champion,) if self.challenger is None else (self.champion, self.challenger)

    def start(self) -> None:
        self.started += 1

    def close(self) -> None:
        self.closed += 1


class ListSink:
    """A sink that keeps the records in memory (level 4's writes them from a thread)."""

    def __init__(self, fail: bool = False) -> None:
        self.records: list[PredictionRecord] = []
        self.fail, self.started, self.closed = fail, 0, 0

    def start(self) -> None:
        self.started += 1

    def submit(self, record: PredictionRecord) -> None:
        if self.fail:
            raise OSError("the prediction log is full")
        self.records.append(record)

    def close(self) -> None:
        self.closed += 1


def _ride_id(variant_parity: int) -> str:
    """A ride id that ABSource sends to the champion (0) or the challenger (1)."""
    return next(f"ride-{i}" for i in range(100)
                if zlib.crc32(f"ride-{i}".encode()) % 2 == variant_parity)


def _metric(client, name: str, **labels: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def two_models(linear_model_file: Path, service_trips: pd.DataFrame):
    """(champion linear pipeline, challenger ridge pipeline) and their Served, versions 1 and 2."""
    linear, _ = load_model(linear_model_file)
    ridge = fit_model("ridge", service_trips, {"alpha": 30.0})
    return (linear, ridge, Served(serving_model(linear, "1"), "1", "champion"),
            Served(serving_model(ridge, "2"), "2", "challenger"))


def test_the_test_doubles_satisfy_the_protocols(two_models) -> None:
    assert isinstance(ABSource(two_models[2], None), ModelSource)
    assert isinstance(ListSink(), PredictionSink)


def test_the_source_chooses_per_request_and_responses_carry_the_variant(two_models) -> None:
    linear, ridge, champion, challenger = two_models
    source = ABSource(champion, challenger)
    app = create_app(source, LEVEL4)
    client = app.test_client()
    to_champion, to_challenger = _ride_id(0), _ride_id(1)
    ids = set()
    for ride_id, variant, pipeline, version in [(to_champion, "champion", linear, "1"),
                                                (to_challenger, "challenger", ridge, "2")] * 3:
        body = client.post("/predict", json={**RIDE, "ride_id": ride_id}).get_json()
        assert list(body) == ["duration", "model_version", "variant", "request_id"]
        assert body["variant"] == variant and body["model_version"] == version
        assert body["duration"] == pipeline.predict(pd.DataFrame([RIDE]))[0]
        assert REQUEST_ID.fullmatch(body["request_id"])
        ids.add(body["request_id"])
    assert len(ids) == 6  # one id per request

    forced = client.post("/predict", json=RIDE, headers={"X-Variant": "challenger"}).get_json()
    assert forced["variant"] == "challenger"  # the source sees the request headers

    rides = [{**RIDE, "trip_distance": d, "ride_id": to_challenger if i == 0 else f"x{i}"}
             for i, d in enumerate(np.linspace(0.1, 30, 300).round(2))]
    batch = client.post("/predict", json=rides).get_json()  # the fast batch path, parsed back
    assert {(b["variant"], b["model_version"]) for b in batch} == {("challenger", "2")}
    assert len({b["request_id"] for b in batch}) == 1
    features = pd.DataFrame([{k: r[k] for k in RIDE} for r in rides])
    assert np.array_equal([b["duration"] for b in batch], ridge.predict(features))

    assert _metric(client, "taxi_predictions_total", model_version="1", variant="champion") == 3
    assert _metric(client, "taxi_predictions_total", model_version="2",
                   variant="challenger") == 304
    assert _metric(client, "taxi_predicted_duration_seconds_count", variant="challenger") == 304
    # Under A/B both lines stay 1: serving the challenger does not switch the champion off.
    assert _metric(client, "taxi_model_info", model_version="1", variant="champion") == 1
    assert _metric(client, "taxi_model_info", model_version="2", variant="challenger") == 1
    health = client.get("/health").get_json()
    assert health == {"status": "ok", "model_version": "1",
                      "models": [{"variant": "champion", "model_version": "1"},
                                 {"variant": "challenger", "model_version": "2"}]}


def test_model_info_follows_a_reload_and_a_challenger_that_goes(two_models) -> None:
    linear, _, champion, challenger = two_models
    source = ABSource(champion, challenger)
    client = create_app(source, LEVEL4).test_client()
    client.post("/predict", json={**RIDE, "ride_id": _ride_id(0)})
    source.champion = Served(serving_model(linear, "3"), "3", "champion")  # the alias moved
    assert client.post("/predict", json=RIDE).get_json()["model_version"] == "3"
    assert _metric(client, "taxi_model_info", model_version="1", variant="champion") == 0
    assert _metric(client, "taxi_model_info", model_version="3", variant="champion") == 1
    source.challenger = None  # the A/B test ended: seen at the next scrape, with no prediction
    assert _metric(client, "taxi_model_info", model_version="2", variant="challenger") == 0
    assert _metric(client, "taxi_model_info", model_version="3", variant="champion") == 1


def test_ride_id_is_accepted_only_when_configured(linear_model_file: Path) -> None:
    level2 = create_app(ModelFileSource(linear_model_file)).test_client()
    refused = level2.post("/predict", json={**RIDE, "ride_id": "r-1"})
    assert refused.status_code == 422 and refused.get_json()["field"] == "ride_id"
    level4 = create_app(ModelFileSource(linear_model_file), {"ACCEPT_RIDE_ID": True}
                        ).test_client()
    same = level4.post("/predict", json={**RIDE, "ride_id": "r-1"}).get_json()
    assert same == level2.post("/predict", json=RIDE).get_json()  # no extra fields by default
    assert level4.post("/predict", json=[RIDE, {**RIDE, "ride_id": None}]).status_code == 200
    for bad, index in [({**RIDE, "ride_id": 7}, None), ([RIDE, {**RIDE, "ride_id": ""}], 1),
                       ({**RIDE, "ride_id": "x" * 129}, None)]:
        error = level4.post("/predict", json=bad).get_json()
        assert (error["error"], error["field"], error["index"]) == ("invalid_ride", "ride_id",
                                                                   index)
    unknown = level4.post("/predict", json={**RIDE, "rideid": "r"}).get_json()
    assert "optionally ride_id" in unknown["message"]


def test_a_ride_id_with_a_control_character_is_refused(linear_model_file: Path) -> None:
    """Regression (fuzz test): a ``ride_id`` holding NUL was served, and PostgreSQL's text cannot
    store NUL, so the prediction log's whole batch (other clients' rows too) failed to write."""
    level4 = create_app(ModelFileSource(linear_model_file), {"ACCEPT_RIDE_ID": True}
                        ).test_client()
    for ride_id in ("a\x00b", "line\nbreak", "\x7f", "tab\t"):
        error = level4.post("/predict", json=[RIDE, {**RIDE, "ride_id": ride_id}]).get_json()
        assert (error["error"], error["field"], error["index"]) == ("invalid_ride", "ride_id", 1)
        assert "without control characters" in error["message"]
    for ride_id in ("é-ü-東京", "a b", "x" * 128):  # unicode and spaces are fine
        assert level4.post("/predict", json={**RIDE, "ride_id": ride_id}).status_code == 200


def test_the_sink_receives_every_served_prediction(linear_model_file: Path) -> None:
    sink = ListSink()
    app = create_app(ModelFileSource(linear_model_file),
                     {"ACCEPT_RIDE_ID": True, "RESPONSE_FIELDS": ("request_id",)}, sink=sink)
    client = app.test_client()
    before = time.time()
    one = client.post("/predict", json={**RIDE, "ride_id": "a"}).get_json()
    batch = client.post("/predict", json=[RIDE, {**RIDE, "trip_distance": 9.5}]).get_json()
    assert client.post("/predict", json={"PULocationID": 0}).status_code == 422  # not served
    after = time.time()
    assert len(sink.records) == 2
    first, second = sink.records
    assert first.request_id == one["request_id"] and second.request_id == batch[0]["request_id"]
    assert before <= first.time <= second.time <= after
    assert (first.variant, first.model_version) == ("champion", "1")
    assert list(first.rides.ride_ids) == ["a"] and list(second.rides.ride_ids) == [None, None]
    assert second.rides.distance.tolist() == [3.66, 9.5]
    assert second.minutes.tolist() == [b["duration"] for b in batch]


def test_a_failing_sink_does_not_fail_the_request(linear_model_file: Path, caplog) -> None:
    client = create_app(ModelFileSource(linear_model_file), sink=ListSink(fail=True)
                        ).test_client()
    with caplog.at_level(logging.ERROR):
        first, second = client.post("/predict", json=RIDE), client.post("/predict", json=RIDE)
    assert first.status_code == second.status_code == 200
    logged = [r for r in caplog.records if "the prediction log is full" in (r.exc_text or "")]
    assert len(logged) == 1  # logged once, not at every request


def test_start_and_close_run_once_per_process(two_models) -> None:
    source, sink = ABSource(two_models[2], None), ListSink()
    app = create_app(source, sink=sink)
    close_service(app)  # never started here: nothing to close
    assert (source.closed, sink.closed) == (0, 0)
    start_service(app)
    start_service(app)
    assert (source.started, sink.started) == (1, 1)
    close_service(app)
    close_service(app)
    assert (source.closed, sink.closed) == (1, 1)


def test_unknown_response_fields_are_refused(linear_model_file: Path) -> None:
    with pytest.raises(ValueError, match=r"\['worker'\] are not response fields"):
        create_app(ModelFileSource(linear_model_file), {"RESPONSE_FIELDS": ("worker",)})
