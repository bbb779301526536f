"""The app's fast path for ``POST /predict`` (``PredictFastPath``): the same answer as Flask's
view, byte for byte, for every kind of request; Flask still answers everything but well-formed
predictions; the fast path steps aside for an app with hooks of its own."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import flask
import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import EnvironBuilder, run_wsgi_app

from level2_devops.app import PredictFastPath, close_service, create_app, start_service
from level2_devops.service.model_source import ModelFileSource, ModelUnavailableError
from level2_devops.service.sink import PredictionRecord

RIDE = {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}
LEVEL4_CONFIG = {"ACCEPT_RIDE_ID": True, "RESPONSE_FIELDS": ("variant",), "MAX_RIDES": 50,
                 "MAX_CONTENT_LENGTH": 4096}


class ListSink:
    """Keeps every record it is given (the sink protocol of ``level2_devops.service.sink``)."""

    def __init__(self) -> None:
        self.records: list[PredictionRecord] = []

    def start(self) -> None:
        """Nothing to start."""

    def submit(self, record: PredictionRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        """Nothing to close."""


def _environ(path: str = "/predict", method: str = "POST", body: bytes = b"",
             content_type: str | None = "application/json", **extra: Any) -> dict[str, Any]:
    environ = EnvironBuilder(path=path, method=method, data=body,
                             content_type=content_type).get_environ()
    if content_type is None:
        environ.pop("CONTENT_TYPE", None)
    environ.update(extra)
    return environ


def _call(app: Flask, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    app_iter, status, headers = run_wsgi_app(app, environ, buffered=True)
    return status, sorted(headers.items()), b"".join(app_iter)


def _body(value: Any) -> bytes:
    return json.dumps(value).encode()


def _chunked(body: bytes) -> dict[str, Any]:
    environ = _environ(body=b"")
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(body),
                    "wsgi.input_terminated": True})
    return environ


def _truncated(body: bytes) -> dict[str, Any]:
    """A request whose client sent less than its Content-Length says."""
    environ = _environ(body=body[:-5])
    environ["CONTENT_LENGTH"] = str(len(body))
    return environ


REQUESTS = {
    "one ride": lambda: _environ(body=_body(RIDE)),
    "one ride with a ride id": lambda: _environ(body=_body({**RIDE, "ride_id": "r-1"})),
    "a batch": lambda: _environ(body=_body([RIDE, {**RIDE, "trip_distance": 9.5}] * 5)),
    "a list of one": lambda: _environ(body=_body([RIDE])),
    "charset parameter": lambda: _environ(body=_body(RIDE),
                                          content_type="application/json; charset=utf-8"),
    "upper-case content type": lambda: _environ(body=_body(RIDE),
                                                content_type="Application/JSON"),
    "a form": lambda: _environ(body=b"a=1", content_type="application/x-www-form-urlencoded"),
    "no content type": lambda: _environ(body=_body(RIDE), content_type=None),
    "malformed JSON": lambda: _environ(body=b'{"PULocationID": 1,'),
    "not UTF-8": lambda: _environ(body=b'{"PULocationID": "\xff"}'),
    "empty body": lambda: _environ(body=b""),
    "zone out of range": lambda: _environ(body=_body({**RIDE, "PULocationID": 999})),
    "unknown field": lambda: _environ(body=_body({**RIDE, "tip": 1})),
    "too many rides": lambda: _environ(body=_body([RIDE] * 51)),
    "over the size limit": lambda: _environ(body=_body([RIDE] * 80)),
    "chunked": lambda: _chunked(_body(RIDE)),
    "a Content-Length in other digits": lambda: _environ(body=_body(RIDE),
                                                         CONTENT_LENGTH="\u0666\u0665"),
    "truncated": lambda: _truncated(_body(RIDE)),
    "GET /predict": lambda: _environ(method="GET", body=b"", content_type=None),
    "PUT /predict": lambda: _environ(method="PUT", body=_body(RIDE)),
    "POST /predict/": lambda: _environ(path="/predict/", body=_body(RIDE)),
    "GET /health": lambda: _environ(path="/health", method="GET", content_type=None),
}


def _apps(model_file: Path, config: dict[str, Any]) -> tuple[Flask, Flask, ListSink, ListSink]:
    sinks = ListSink(), ListSink()
    fast, flask_only = (create_app(ModelFileSource(model_file),
                                   {**config, "PREDICT_FAST_PATH": enabled}, sink=sink)
                        for enabled, sink in zip((True, False), sinks, strict=True))
    for app in (fast, flask_only):
        start_service(app)
        _call(app, _environ(path="/health", method="GET", content_type=None))  # the first
    return fast, flask_only, *sinks


def _flask_calls(app: Flask) -> list[str]:
    """Count the requests that reach Flask behind the app's fast path."""
    fast_path = app.wsgi_app.wsgi_app
    assert isinstance(fast_path, PredictFastPath)
    calls: list[str] = []
    flask_wsgi_app = fast_path.flask_wsgi_app

    def counted(environ: dict[str, Any], start_response: Any) -> Any:
        calls.append(environ["PATH_INFO"])
        return flask_wsgi_app(environ, start_response)

    fast_path.flask_wsgi_app = counted
    return calls


def _request_counts(app: Flask) -> dict[tuple[str, str, str], float]:
    _, _, text = _call(app, _environ(path="/metrics", method="GET", content_type=None))
    return {(s.labels["endpoint"], s.labels["method"], s.labels["status"]): s.value
            for family in text_string_to_metric_families(text.decode())
            if family.name == "taxi_http_requests"
            for s in family.samples if s.name.endswith("_total")}


@pytest.mark.parametrize("config", [{}, LEVEL4_CONFIG], ids=["level 2", "level 4 fields"])
def test_every_request_gets_the_same_answer_with_and_without_the_fast_path(
        linear_model_file: Path, config: dict[str, Any]) -> None:
    fast, flask_only, fast_sink, flask_sink = _apps(linear_model_file, config)
    flask_calls = _flask_calls(fast)
    served_fast, answered_200 = set(), set()
    try:
        for name, make in REQUESTS.items():
            before = len(flask_calls)
            answers = [_call(app, make()) for app in (fast, flask_only)]
            assert answers[0] == answers[1], name
            environ = make()
            if answers[0][0] == "200 OK" and (environ["REQUEST_METHOD"], environ["PATH_INFO"]
                                               ) == ("POST", "/predict"):
                answered_200.add(name)
            if len(flask_calls) == before:
                served_fast.add(name)
        assert _request_counts(fast) == _request_counts(flask_only)
    finally:
        for app in (fast, flask_only):
            close_service(app)
    accepted = {"one ride", "a batch", "a list of one", "charset parameter"}
    # level 2's limits take 51 and 80 rides; the level-4 config takes ride ids, refuses 51
    # rides (422) and 80 rides' bytes (413)
    accepted |= ({"one ride with a ride id"} if config else
                 {"too many rides", "over the size limit"})
    # the fast path served exactly the well-formed predictions; everything else reached Flask
    assert served_fast == accepted
    # Flask also serves what the fast path leaves to it (a chunked body, "Application/JSON")
    assert answered_200 >= accepted | {"chunked", "upper-case content type"}
    assert len(fast_sink.records) == len(flask_sink.records) == len(answered_200)
    for ours, theirs in zip(fast_sink.records, flask_sink.records, strict=True):
        assert (ours.variant, ours.model_version, ours.minutes.tolist(),
                ours.rides.ride_ids) == (theirs.variant, theirs.model_version,
                                         theirs.minutes.tolist(), theirs.rides.ride_ids)


def test_a_model_that_fails_is_answered_by_flasks_error_handler(
        linear_model_file: Path, caplog) -> None:
    source = ModelFileSource(linear_model_file)
    app = create_app(source)
    start_service(app)
    _call(app, _environ(path="/health", method="GET", content_type=None))
    flask_calls = _flask_calls(app)
    assert _call(app, _environ(body=_body(RIDE)))[0].startswith("200")
    assert flask_calls == []

    def unavailable(request: Any) -> Any:
        raise ModelUnavailableError("no model file")

    source.select = unavailable  # type: ignore[method-assign]
    status, _, body = _call(app, _environ(body=_body(RIDE)))
    close_service(app)
    assert status.startswith("503")
    assert json.loads(body)["error"] == "model_unavailable"
    assert flask_calls == ["/predict"]


def test_an_app_with_hooks_of_its_own_is_served_by_flask_only(linear_model_file: Path) -> None:
    app = create_app(ModelFileSource(linear_model_file))
    seen: list[str] = []

    @app.after_request
    def note(response: Any) -> Any:
        seen.append(response.status)
        return response

    flask_calls = _flask_calls(app)
    for _ in range(2):
        status, _, _ = _call(app, _environ(body=_body(RIDE)))
        assert status.startswith("200")
    assert (seen, flask_calls) == (["200 OK"] * 2, ["/predict"] * 2)


def test_the_first_request_goes_to_flask_which_then_refuses_new_hooks(
        linear_model_file: Path) -> None:
    """No hook can be added once the fast path has looked for them: Flask refuses setup after
    its first request, and the first request of a process is Flask's."""
    app = create_app(ModelFileSource(linear_model_file))
    flask_calls = _flask_calls(app)
    for _ in range(3):
        assert _call(app, _environ(body=_body(RIDE)))[0].startswith("200")
    assert flask_calls == ["/predict"]
    with pytest.raises(AssertionError, match="can no longer be called"):
        app.after_request(lambda response: response)


SIGNALS = ("request_started", "request_finished", "request_tearing_down",
           "got_request_exception", "appcontext_pushed", "appcontext_popped",
           "appcontext_tearing_down")


@pytest.mark.parametrize("name", SIGNALS)
def test_a_signal_receiver_turns_the_fast_path_off_while_connected(
        linear_model_file: Path, name: str) -> None:
    app = create_app(ModelFileSource(linear_model_file))
    _call(app, _environ(path="/health", method="GET", content_type=None))
    flask_calls = _flask_calls(app)
    _call(app, _environ(body=_body(RIDE)))
    assert flask_calls == []

    def note(sender: Any, **extra: Any) -> None:
        """A receiver that does nothing: being connected is what counts."""

    with getattr(flask, name).connected_to(note, app):
        _call(app, _environ(body=_body(RIDE)))
    _call(app, _environ(body=_body(RIDE)))
    assert flask_calls == ["/predict"]


def test_an_app_without_a_size_limit_has_the_fast_path_too(linear_model_file: Path) -> None:
    app = create_app(ModelFileSource(linear_model_file), {"MAX_CONTENT_LENGTH": None})
    _call(app, _environ(path="/health", method="GET", content_type=None))
    flask_calls = _flask_calls(app)
    status, _, body = _call(app, _environ(body=_body([RIDE] * 100)))
    assert status.startswith("200") and len(json.loads(body)) == 100
    assert flask_calls == []
