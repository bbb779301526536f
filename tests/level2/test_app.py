"""The web service through Flask's test client: predictions, bad input, health, metrics, OpenAPI."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flask import abort, request
from prometheus_client.parser import text_string_to_metric_families

from level2_devops.app import create_app
from level2_devops.model_store import load_model
from level2_devops.service.model_source import ModelFileSource, PredictionRequest, Served
from level2_devops.service.rides import MAX_RIDE_ID_LENGTH, RIDE_ID_PATTERN, RideBatch

RIDE = {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}


def _post(client, body, content_type: str = "application/json"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post("/predict", data=data, content_type=content_type)


def _rides(df: pd.DataFrame, n: int) -> list[dict]:
    rows = df.iloc[:n]
    return [{"PULocationID": int(pu), "DOLocationID": int(do), "trip_distance": float(d)}
            for pu, do, d in zip(rows["PULocationID"], rows["DOLocationID"],
                                 rows["trip_distance"], strict=True)]


def _expected(pipeline, rides: list[dict]) -> np.ndarray:
    return pipeline.predict(pd.DataFrame(rides))


# --- predictions -------------------------------------------------------------------------------

def test_one_ride_gets_the_pipelines_prediction_and_the_model_version(
        client, linear_model_file: Path) -> None:
    pipeline, metadata = load_model(linear_model_file)
    response = _post(client, RIDE)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"duration", "model_version"}
    assert metadata["version"] == "v1"  # the file's label; the service answers plain "1"
    assert body["model_version"] == "1"
    assert body["duration"] == _expected(pipeline, [RIDE])[0]  # exact, not approximate


def test_a_batch_gets_the_pipelines_predictions_in_order(
        client, linear_model_file: Path, service_trips: pd.DataFrame) -> None:
    pipeline, _ = load_model(linear_model_file)
    rides = _rides(service_trips, 500)
    response = _post(client, rides)
    assert response.status_code == 200
    body = response.get_json()
    assert isinstance(body, list) and len(body) == 500
    assert {b["model_version"] for b in body} == {"1"}
    assert np.array_equal([b["duration"] for b in body], _expected(pipeline, rides))


def test_a_list_of_one_ride_answers_with_a_list(client) -> None:
    body = _post(client, [RIDE]).get_json()
    assert isinstance(body, list) and len(body) == 1
    assert body[0]["duration"] == _post(client, RIDE).get_json()["duration"]


def test_a_zone_pair_never_seen_in_training_still_predicts(
        client, linear_model_file: Path, service_trips: pd.DataFrame) -> None:
    pipeline, _ = load_model(linear_model_file)
    seen = set(zip(service_trips["PULocationID"].astype(int),
                   service_trips["DOLocationID"].astype(int), strict=True))
    unseen = next((pu, do) for pu in range(1, 266) for do in range(1, 266)
                  if (pu, do) not in seen)
    ride = {"PULocationID": unseen[0], "DOLocationID": unseen[1], "trip_distance": 2.5}
    response = _post(client, ride)
    assert response.status_code == 200
    assert response.get_json()["duration"] == _expected(pipeline, [ride])[0]


def test_the_largest_allowed_batch_is_accepted(client) -> None:
    response = _post(client, [RIDE] * 10_000)
    assert response.status_code == 200
    assert len(response.get_json()) == 10_000


def test_boundary_values_are_valid(client) -> None:
    rides = [{"PULocationID": 1, "DOLocationID": 265, "trip_distance": 0},
             {"PULocationID": 265, "DOLocationID": 1, "trip_distance": 200},
             {"PULocationID": 7, "DOLocationID": 7, "trip_distance": 12}]  # ints are numbers
    assert _post(client, rides).status_code == 200


# --- bad input: always a 4xx JSON error naming the field (and index), never a traceback -------

def _ride(**changes) -> dict:
    return {**RIDE, **changes}


def _without(name: str) -> dict:
    return {k: v for k, v in RIDE.items() if k != name}


BAD = [
    # id, body, content type, status, error code, field, index
    ("malformed-json", b'{"PULocationID": 130,', None, 400, "malformed_json", None, None),
    ("not-json-at-all", b"hello", None, 400, "malformed_json", None, None),
    ("empty-body", b"", None, 400, "malformed_json", None, None),
    ("missing-field", _without("trip_distance"), None, 422, "invalid_ride", "trip_distance",
     None),
    ("extra-field", _ride(passenger_count=1), None, 422, "invalid_ride", "passenger_count",
     None),
    ("ride-id-by-default", _ride(ride_id="r-1"), None, 422, "invalid_ride", "ride_id", None),
    ("string-for-zone", _ride(PULocationID="130"), None, 422, "invalid_ride", "PULocationID",
     None),
    ("string-for-distance", _ride(trip_distance="3.66"), None, 422, "invalid_ride",
     "trip_distance", None),
    ("bool-for-zone", _ride(DOLocationID=True), None, 422, "invalid_ride", "DOLocationID", None),
    ("bool-for-distance", _ride(trip_distance=False), None, 422, "invalid_ride",
     "trip_distance", None),
    ("null-distance", _ride(trip_distance=None), None, 422, "invalid_ride", "trip_distance",
     None),
    ("float-zone", _ride(PULocationID=130.5), None, 422, "invalid_ride", "PULocationID", None),
    ("nan-literal", b'{"PULocationID": 130, "DOLocationID": 205, "trip_distance": NaN}', None,
     422, "invalid_ride", "trip_distance", None),
    ("infinity-literal", b'{"PULocationID": 130, "DOLocationID": 205, "trip_distance": Infinity}',
     None, 422, "invalid_ride", "trip_distance", None),
    ("minus-infinity-in-list",
     b'[{"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1},'
     b' {"PULocationID": 1, "DOLocationID": 2, "trip_distance": -Infinity}]',
     None, 422, "invalid_ride", "trip_distance", 1),
    ("overflowing-number", b'{"PULocationID": 130, "DOLocationID": 205, "trip_distance": 1e999}',
     None, 422, "invalid_ride", "trip_distance", None),
    ("negative-distance", _ride(trip_distance=-0.5), None, 422, "invalid_ride", "trip_distance",
     None),
    ("absurd-distance", _ride(trip_distance=244152.0), None, 422, "invalid_ride",
     "trip_distance", None),
    ("zone-zero", _ride(PULocationID=0), None, 422, "invalid_ride", "PULocationID", None),
    ("zone-266", _ride(DOLocationID=266), None, 422, "invalid_ride", "DOLocationID", None),
    ("huge-zone", _ride(DOLocationID=10**30), None, 422, "invalid_ride", "DOLocationID", None),
    ("bad-ride-in-list", [RIDE, RIDE, _ride(PULocationID="x")], None, 422, "invalid_ride",
     "PULocationID", 2),
    ("missing-field-in-list", [RIDE, _without("DOLocationID")], None, 422, "invalid_ride",
     "DOLocationID", 1),
    ("non-object-in-list", [RIDE, 5], None, 422, "invalid_ride", None, 1),
    ("empty-list", [], None, 422, "invalid_batch", None, None),
    ("list-over-the-limit", [RIDE] * 10_001, None, 422, "invalid_batch", None, None),
    ("a-string-body", "taxi", None, 422, "invalid_body", None, None),
    ("a-number-body", 42, None, 422, "invalid_body", None, None),
    ("null-body", None, None, 422, "invalid_body", None, None),
    ("wrong-content-type", RIDE, "text/plain", 415, "unsupported_media_type", None, None),
    ("form-content-type", RIDE, "application/x-www-form-urlencoded", 415,
     "unsupported_media_type", None, None),
    ("body-over-the-size-limit", b"[" + b" " * (3 * 1024 * 1024) + b"]", None, 413,
     "request_entity_too_large", None, None),
]


@pytest.mark.parametrize(("body", "content_type", "status", "code", "field", "index"),
                         [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_input_is_a_4xx_json_error_naming_the_field(
        client, body, content_type, status, code, field, index) -> None:
    if not isinstance(body, bytes):
        body = json.dumps(body)
    response = _post(client, body, content_type or "application/json")
    assert response.status_code == status
    assert response.mimetype == "application/json"
    error = response.get_json()
    assert error["error"] == code
    assert error["field"] == field
    assert error["index"] == index
    message = error["message"]
    assert "\n" not in message and "Traceback" not in response.get_data(as_text=True)
    if field is not None:
        assert field in message
    if index is not None:
        assert f"rides[{index}]" in message


#: Bodies the fuzz test (tests/level2/test_fuzz.py) found answered with a 500 or a message that
#: was not one line naming the field: id, body, status, error code, field, text in the message.
FUZZ_REGRESSIONS = [
    ("invalid-utf8-key", b'{"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1, "\xff": 1}',
     400, "malformed_json", None, "UTF-8"),
    ("invalid-utf8-key-in-a-list", b'[{"PULocationID": 1, "\xc3(": 2}]', 400, "malformed_json",
     None, "UTF-8"),
    ("newline-in-unknown-field", json.dumps({**RIDE, "a\nb": 1}).encode(), 422, "invalid_ride",
     "a\nb", '"a\\nb": is not a ride field'),
    ("backticks-in-unknown-field", json.dumps({**RIDE, "a`b - at `$.x`": 1}).encode(), 422,
     "invalid_ride", "a`b - at `$.x`", "a`b - at `$.x`: is not a ride field"),
    ("line-separator-in-a-list", json.dumps([RIDE, {**RIDE, "\u2028": 1}]).encode(), 422,
     "invalid_ride", "\u2028", 'rides[1]."\\u2028"'),
    ("megabyte-field-name", json.dumps({"x" * 1_000_000: 1}).encode(), 422, "invalid_ride",
     "x" * 64, "x" * 64 + "...: is not a ride field"),
    ("lone-surrogate-escape",
     b'{"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1, "\\ud800": 1}', 400,
     "malformed_json", None, "half of a UTF-16 surrogate pair"),
    ("overflowing-zone", b'{"PULocationID": 1e999, "DOLocationID": 2, "trip_distance": 1}', 422,
     "invalid_ride", "PULocationID", "integer TLC zone ID from 1 to 265 (number out of range)"),
]


@pytest.mark.parametrize(("body", "status", "code", "field", "says"),
                         [case[1:] for case in FUZZ_REGRESSIONS],
                         ids=[case[0] for case in FUZZ_REGRESSIONS])
def test_fuzz_regressions_are_one_line_4xx_json(client, body, status, code, field, says) -> None:
    response = _post(client, body)
    assert response.status_code == status
    error = response.get_json()
    assert (error["error"], error["field"]) == (code, field)
    assert says in error["message"]
    assert error["message"].isprintable() and len(error["message"]) < 300


def test_a_404_shows_the_clients_path_on_one_line(client) -> None:
    """Regression (fuzz test): the 404 message repeated the path as sent, control characters and
    all, however long."""
    error = client.get("/a\x1d" + "b" * 5000).get_json()
    assert error["error"] == "not_found"
    assert error["message"].startswith('GET "/a\\u001d' + "b" * 50)
    assert error["message"].isprintable() and len(error["message"]) < 200


def _chunked(app, body: bytes):
    """POST /predict as gunicorn hands a chunked request to the app: no Content-Length, and
    ``wsgi.input_terminated`` set (the server ends the stream)."""
    import io

    from werkzeug.test import EnvironBuilder, run_wsgi_app

    environ = EnvironBuilder(path="/predict", method="POST",
                             content_type="application/json").get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True,
                    "HTTP_TRANSFER_ENCODING": "chunked"})
    chunks, status, _ = run_wsgi_app(app, environ)
    return int(status[:3]), json.loads(b"".join(chunks))


def test_a_chunked_body_over_the_limit_is_413(service_app) -> None:
    """Regression (found while fuzzing the body limit): werkzeug stops reading a streamed body at
    MAX_CONTENT_LENGTH and returns the part it read, so an oversized chunked list was answered
    400 "not valid JSON (truncated)" instead of 413."""
    limit = service_app.config["MAX_CONTENT_LENGTH"]
    status, error = _chunked(service_app, b"[" + b" " * limit + b"]")
    assert (status, error["error"]) == (413, "request_entity_too_large")
    status, answer = _chunked(service_app, json.dumps([RIDE] * 3).encode())
    assert status == 200 and len(answer) == 3


def test_a_missing_content_type_is_415(client) -> None:
    response = client.post("/predict", data=json.dumps(RIDE))
    assert response.status_code == 415
    assert response.get_json()["error"] == "unsupported_media_type"


def test_a_content_type_with_charset_is_fine(client) -> None:
    response = _post(client, RIDE, "application/json; charset=utf-8")
    assert response.status_code == 200


@pytest.mark.parametrize(("method", "path", "status", "code", "allowed"), [
    ("get", "/nowhere", 404, "not_found", None),
    ("get", "/predict", 405, "method_not_allowed", "POST"),
    ("post", "/health", 405, "method_not_allowed", "GET"),
])
def test_unknown_routes_and_methods_are_json(client, method, path, status, code,
                                             allowed) -> None:
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert response.get_json()["error"] == code
    assert path in response.get_json()["message"]
    if allowed is not None:  # a 405 keeps the methods the route does accept
        assert allowed in response.headers["Allow"].split(", ")


def test_the_ride_limit_and_body_limit_come_from_config(linear_model_file: Path) -> None:
    app = create_app(ModelFileSource(linear_model_file), {"MAX_RIDES": 3,
                                                          "MAX_CONTENT_LENGTH": 1000})
    client = app.test_client()
    assert _post(client, [RIDE] * 3).status_code == 200
    assert _post(client, [RIDE] * 4).get_json()["error"] == "invalid_batch"
    assert _post(client, [RIDE] * 20).status_code == 413


class _BrokenModel:
    version = "broken"

    def predict(self, rides: RideBatch) -> np.ndarray:
        raise RuntimeError("the model exploded")


class _BrokenSource:
    served = Served(_BrokenModel(), "broken")

    def select(self, request: PredictionRequest) -> Served:
        return self.served

    def serving(self) -> tuple[Served, ...]:
        return (self.served,)

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_an_unexpected_error_is_a_json_500_logged_server_side(caplog) -> None:
    client = create_app(_BrokenSource()).test_client()
    with caplog.at_level(logging.ERROR):
        response = _post(client, RIDE)
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert response.get_json()["error"] == "internal_error"
    assert "exploded" not in body and "Traceback" not in body
    assert any("the model exploded" in (r.exc_text or "") for r in caplog.records)


INTERNAL_ERROR = {"error": "internal_error",
                  "message": "internal server error: the server log has the details",
                  "field": None, "index": None,
                  "reason": "internal server error: the server log has the details"}


def test_a_500_raised_after_the_view_has_the_same_shape_and_is_counted(
        linear_model_file: Path, caplog) -> None:
    """An after_request function that fails (level 4 adds its own) turns a 200 into a 500: the
    client gets the documented ``internal_error`` body, and /metrics counts a 500."""
    app = create_app(ModelFileSource(linear_model_file))

    @app.after_request
    def fail_on_predict(response):
        if request.path == "/predict":
            raise RuntimeError("after the view")
        return response

    client = app.test_client()
    with caplog.at_level(logging.ERROR):
        response = _post(client, RIDE)
    assert response.status_code == 500
    assert response.get_json() == INTERNAL_ERROR
    assert any("after the view" in (r.exc_text or "") for r in caplog.records)
    samples = _samples(client)
    assert _value(samples, "taxi_http_requests_total", endpoint="/predict", method="POST",
                  status="500") == 1
    assert _value(samples, "taxi_http_requests_total", endpoint="/predict", method="POST",
                  status="200") == 0


def test_an_explicit_internal_server_error_has_the_same_shape(linear_model_file: Path) -> None:
    app = create_app(ModelFileSource(linear_model_file))

    @app.get("/boom")
    def boom():
        abort(500)

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json() == INTERNAL_ERROR


def test_metrics_that_fail_never_fail_a_request(linear_model_file: Path, tmp_path: Path,
                                                caplog) -> None:
    """The real failure: Prometheus' multiprocess folder vanished under a worker. Counting then
    raises FileNotFoundError; the prediction is still answered, and the error is logged."""
    from level2_devops.service.server import multiprocess_dir
    from taxi_common.settings import Settings

    with multiprocess_dir(Settings(workbook_home=tmp_path)) as directory:
        client = create_app(ModelFileSource(linear_model_file)).test_client()
        shutil.rmtree(directory)
        with caplog.at_level(logging.ERROR):
            predict, health = _post(client, RIDE), client.get("/health")
    assert predict.status_code == 200, predict.get_json()
    assert predict.get_json()["duration"] > 0
    assert health.status_code == 200
    assert any("FileNotFoundError" in (r.exc_text or "") for r in caplog.records)


# --- health ------------------------------------------------------------------------------------

def test_health_is_ok_with_the_model_version(client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "model_version": "1",
                                   "models": [{"variant": "champion", "model_version": "1"}]}


def test_without_a_model_health_and_predict_answer_503(tmp_path: Path) -> None:
    client = create_app(ModelFileSource(tmp_path / "taxi-duration-v9.pkl")).test_client()
    health = client.get("/health")
    assert health.status_code == 503
    assert health.get_json()["status"] == "unavailable"
    assert "taxi-duration-v9.pkl" in health.get_json()["message"]
    predict = _post(client, RIDE)
    assert predict.status_code == 503
    assert predict.get_json()["error"] == "model_unavailable"


# --- metrics -----------------------------------------------------------------------------------

def _samples(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.get_data(as_text=True))
            for s in family.samples}


def _value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_by_the_right_amounts(client, service_trips: pd.DataFrame) -> None:
    before = _samples(client)
    singles = [_post(client, r).get_json()["duration"] for r in _rides(service_trips, 5)]
    batch = [p["duration"] for p in _post(client, _rides(service_trips, 40)).get_json()]
    _post(client, _ride(trip_distance=-1))
    client.get("/health")
    after = _samples(client)

    def delta(name: str, **labels) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    ok = {"endpoint": "/predict", "method": "POST"}
    assert delta("taxi_http_requests_total", **ok, status="200") == 6
    assert delta("taxi_http_requests_total", **ok, status="422") == 1
    assert delta("taxi_http_requests_total", endpoint="/health", method="GET",
                 status="200") == 1
    assert delta("taxi_http_request_duration_seconds_count", endpoint="/predict") == 7
    champion = {"variant": "champion"}
    assert delta("taxi_predictions_total", model_version="1", **champion) == 45
    assert delta("taxi_predicted_duration_seconds_count", **champion) == 45
    assert delta("taxi_predicted_duration_seconds_sum", **champion) == pytest.approx(
        60 * sum(singles + batch))  # the API answers in minutes, the metric is in seconds
    all_predictions = np.array(singles + batch)
    for minutes in (5, 15, 30):
        assert delta("taxi_predicted_duration_seconds_bucket", le=str(60.0 * minutes),
                     **champion) == int(np.sum(all_predictions <= minutes))
    assert _value(after, "taxi_model_info", model_version="1", **champion) == 1.0


def test_invented_methods_share_one_metric_label(client) -> None:
    """Regression (fuzz test): the ``method`` label was the client's method, unchecked, so every
    invented method made a new time series in every worker, for good."""
    for i in range(30):
        assert client.open("/predict", method=f"FUZZ{i}").status_code == 405
    client.open("/nowhere", method="PROPFIND")
    methods = {labels[0][1] for name, labels in
               ((n, [kv for kv in ls if kv[0] == "method"]) for n, ls in _samples(client))
               if name == "taxi_http_requests_total"}
    assert methods == {"other"}  # the 31 invented ones (this GET of /metrics counts after it)


# --- the OpenAPI description -------------------------------------------------------------------

def test_the_openapi_description_is_served_and_matches_the_routes(client, service_app) -> None:
    yaml = pytest.importorskip("yaml")  # PyYAML: in the lock (via mlflow), not a level-2 need
    response = client.get("/openapi.yaml")
    assert response.status_code == 200
    spec = yaml.safe_load(response.get_data(as_text=True))
    assert spec["openapi"].startswith("3.")
    routes = {r.rule for r in service_app.url_map.iter_rules() if r.endpoint != "static"}
    assert set(spec["paths"]) == routes
    ride = spec["components"]["schemas"]["Ride"]
    assert set(ride["required"]) == set(RIDE)
    assert set(ride["properties"]) == set(RIDE)  # level 2 rejects ride_id: not documented
    assert spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]["oneOf"][1]["maxItems"] == service_app.config["MAX_RIDES"]
    assert ride["properties"]["trip_distance"]["maximum"] == 200
    prediction = spec["components"]["schemas"]["Prediction"]
    assert set(prediction["required"]) == set(_post(client, RIDE).get_json())
    assert set(prediction["properties"]) == {"duration", "model_version", "variant",
                                             "request_id"}
    health = spec["paths"]["/health"]["get"]["responses"]["200"]["content"]
    assert set(health["application/json"]["schema"]["required"]) == set(
        client.get("/health").get_json())


def test_the_served_openapi_follows_the_configuration(linear_model_file: Path) -> None:
    """Regression (found by the fuzz test): level 2 documented ``ride_id``, which it rejects with
    422, and a smaller ``MAX_RIDES`` was not in the document. Each app now serves its own truth."""
    yaml = pytest.importorskip("yaml")
    source = ModelFileSource(linear_model_file)

    def served(config: dict) -> dict:
        app = create_app(source, config)
        return yaml.safe_load(app.test_client().get("/openapi.yaml").get_data(as_text=True))

    def batch(spec: dict) -> dict:
        return spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"][
            "schema"]["oneOf"][1]

    level2, level4 = served({}), served({"ACCEPT_RIDE_ID": True, "MAX_RIDES": 50})
    assert "ride_id" not in level2["components"]["schemas"]["Ride"]["properties"]
    ride_id = level4["components"]["schemas"]["Ride"]["properties"]["ride_id"]
    assert ride_id["maxLength"] == MAX_RIDE_ID_LENGTH and ride_id["nullable"] is True
    assert ride_id["pattern"] == RIDE_ID_PATTERN  # the parser's own rule
    assert batch(level2)["maxItems"] == 10_000 and batch(level4)["maxItems"] == 50
    # Everything else is the shipped file, unchanged.
    shipped = yaml.safe_load((Path(__file__).parents[2] / "level2_devops" / "openapi.yaml")
                             .read_text())
    del shipped["components"]["schemas"]["Ride"]["properties"]["ride_id"]
    assert level2 == shipped
