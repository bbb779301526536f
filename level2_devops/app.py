"""The prediction web service: ``create_app(model_source, config, sink=None)``, the flaskr
app-factory pattern.

Endpoints (``openapi.yaml`` describes them):

- ``POST /predict``: one ride object → ``{"duration": minutes, "model_version": "3"}``; a JSON list
  of up to ``MAX_RIDES`` rides → a list of those, predicted in one vectorised call. An app
  configured with ``RESPONSE_FIELDS`` adds ``variant`` and/or ``request_id`` to each prediction.
- ``GET /health``: 200 with the model version(s) when a model is loaded, 503 when not.
- ``GET /metrics``: Prometheus text (requests, latency, predictions, predicted values, model).
- ``GET /openapi.yaml``: the API description shipped in the package.

Every error is JSON, ``{"error": code, "message": one line, "field", "index", "reason"}``, with a
4xx status for anything a client can cause, ``internal_error`` for every 500, and never a
traceback. The model comes from a ``ModelSource`` (level 2: a file; level 4: the registry), which
chooses the model of each request; served predictions go to an optional ``PredictionSink``.
Every response the client gets is counted, once, by a WSGI wrapper around the Flask app (after
every after_request function and error handler); a failing metric never fails a request. Inside
that wrapper, ``PredictFastPath`` answers a well-formed ``POST /predict`` with the view's own
functions but without Flask's per-request machinery, and hands everything else to Flask.
"""

from __future__ import annotations

import io
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from logging import Logger
from typing import Any

import msgspec
import numpy as np
from flask import (
    Blueprint,
    Flask,
    Response,
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    current_app,
    got_request_exception,
    request,
    request_finished,
    request_started,
    request_tearing_down,
)
from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import HTTPException, InternalServerError, RequestEntityTooLarge

from level2_devops.service.metrics import ServiceMetrics
from level2_devops.service.model_source import (
    ModelSource,
    ModelUnavailableError,
    PredictionRequest,
    Served,
)
from level2_devops.service.rides import DEFAULT_MAX_RIDES, RideError, RideParser, shown_name
from level2_devops.service.sink import PredictionRecord, PredictionSink

EXTENSION = "taxi_service"
OPTIONAL_RESPONSE_FIELDS = ("variant", "request_id")
DEFAULT_CONFIG: dict[str, Any] = {
    "DEBUG": False,  # never from FLASK_DEBUG in the environment: a served app is not in debug mode
    "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,  # bytes; 10,000 rides take about 0.7 MB
    "MAX_RIDES": DEFAULT_MAX_RIDES,
    "ACCEPT_RIDE_ID": False,  # level 4: rides may carry an optional "ride_id" string
    "RESPONSE_FIELDS": (),  # level 4: any of OPTIONAL_RESPONSE_FIELDS, added to each prediction
    "PREDICT_FAST_PATH": True,  # well-formed POST /predict served without Flask's machinery
}
JSON = "application/json"
INTERNAL_ERROR_MESSAGE = "internal server error: the server log has the details"
FAILURE_LOG_INTERVAL = 60.0  # seconds between two log lines about the same failing part
ENDPOINT_KEY = "taxi.endpoint"  # WSGI environ key: the route that matched the request

api = Blueprint("api", __name__)
ops = Blueprint("ops", __name__)
_encode = msgspec.json.Encoder().encode


@dataclass
class ServiceState:
    """What the views need, stored in ``app.extensions["taxi_service"]``."""

    source: ModelSource
    metrics: ServiceMetrics
    parser: RideParser
    openapi: bytes
    logger: Logger
    sink: PredictionSink | None = None
    with_variant: bool = False
    with_request_id: bool = False
    started_in: int | None = None  # the pid where start_service ran
    last_logged: dict[str, float] = field(default_factory=dict)

    @property
    def needs_request_id(self) -> bool:
        """Requests get an id when a sink records them or the response shows it."""
        return self.sink is not None or self.with_request_id

    def report_failure(self, what: str) -> None:
        """Log the exception being handled, at most once per ``FAILURE_LOG_INTERVAL`` per
        ``what``: a broken metrics folder must not also flood the log at every request."""
        now = time.monotonic()
        if now - self.last_logged.get(what, -FAILURE_LOG_INTERVAL) >= FAILURE_LOG_INTERVAL:
            self.last_logged[what] = now
            self.logger.exception("%s failed; the request is answered anyway (this is logged "
                                  "at most once every %.0f s)", what, FAILURE_LOG_INTERVAL)

    def show_serving(self) -> None:
        """Make ``taxi_model_info`` show what the source serves now (nothing if it cannot)."""
        try:
            try:
                served = {s.variant: s.version for s in self.source.serving()}
            except ModelUnavailableError:
                served = {}
            self.metrics.show_serving(served)
        except Exception:
            self.report_failure("updating taxi_model_info")


def _state() -> ServiceState:
    return current_app.extensions[EXTENSION]


def json_response(payload: Any, status: int = 200) -> Response:
    """A JSON response encoded by msgspec (several times faster than ``jsonify``)."""
    return Response(_encode(payload), status=status, mimetype=JSON)


def predictions_body(minutes: np.ndarray, fields: Mapping[str, Any], single: bool) -> bytes:
    """The response JSON: one object for a single ride, a list of objects for a batch; each
    object is ``{"duration": minutes, **fields}`` (``fields``: model_version, maybe variant and
    request_id, the same for every ride of the request; not empty).

    ``fields`` are encoded once; a batch's minutes are encoded as one list of floats whose commas
    are then widened into the objects' separators (``,"model_version":"3"},{"duration":``):
    three times faster than encoding 1,000 dicts, and the same JSON (floats contain no commas; a
    test parses it back).
    """
    tail = _encode(fields)[1:]  # '"model_version":"3",...}'
    if single:
        return b'{"duration":' + _encode(float(minutes[0])) + b"," + tail
    numbers = _encode(minutes.tolist())[1:-1]
    return (b'[{"duration":' + numbers.replace(b",", b"," + tail + b',{"duration":')
            + b"," + tail + b"]")


def _response_fields(state: ServiceState, served: Served, request_id: str | None
                     ) -> dict[str, Any]:
    fields: dict[str, Any] = {"model_version": served.version}
    if state.with_variant:
        fields["variant"] = served.variant
    if state.with_request_id:
        fields["request_id"] = request_id
    return fields


def _record(state: ServiceState, request_id: str, served: Served, rides: Any,
            minutes: np.ndarray) -> None:
    """Hand the served prediction to the sink (which only enqueues); never fails the request."""
    assert state.sink is not None
    try:
        state.sink.submit(PredictionRecord(request_id, time.time(), rides, served.variant,
                                           served.version, minutes))
    except Exception:
        state.report_failure("the prediction sink")


def _request_body() -> bytes:
    """The whole request body. A streamed (chunked) body longer than ``MAX_CONTENT_LENGTH`` is a
    413: werkzeug stops reading it at the limit and returns what it read without a word, so one
    more read tells (it raises ``RequestEntityTooLarge`` when the limit was reached)."""
    data = request.get_data(cache=False)
    if request.content_length is None and request.stream.read(1):
        raise RequestEntityTooLarge()
    return data


@dataclass(frozen=True, slots=True)
class Prediction:
    """One request's predictions before anything is recorded: what ``answer`` needs."""

    rides: Any
    single: bool
    request_id: str | None
    served: Served
    minutes: np.ndarray


def predict_rides(state: ServiceState, body: bytes, headers: Mapping[str, str]) -> Prediction:
    """Parse ``body``, choose the model and predict; raises (``RideError``,
    ``ModelUnavailableError``, a model's error) before anything is counted or recorded."""
    rides, single = state.parser.parse(body)
    request_id = uuid.uuid4().hex if state.needs_request_id else None
    served = state.source.select(PredictionRequest(rides, headers, request_id))
    minutes = served.model.predict(rides)
    if not np.isfinite(minutes).all():
        raise ValueError(f"model {served.version} predicted a non-finite duration")
    return Prediction(rides, single, request_id, served, minutes)


def answer(state: ServiceState, prediction: Prediction) -> bytes:
    """Count the predictions, hand them to the sink, and return the response body; never
    raises for a failing metric or sink (each is logged, rate-limited)."""
    served, minutes = prediction.served, prediction.minutes
    try:
        state.metrics.observe_predictions(served.version, served.variant, minutes)
    except Exception:
        state.report_failure("counting predictions")
    if state.sink is not None:
        assert prediction.request_id is not None
        _record(state, prediction.request_id, served, prediction.rides, minutes)
    return predictions_body(minutes, _response_fields(state, served, prediction.request_id),
                            prediction.single)


@api.post("/predict")
def predict() -> Response:
    """Predict the duration of one ride or of a list of rides."""
    state = _state()
    if request.mimetype != JSON:
        raise RideError(f"must be sent as Content-Type: {JSON} (got "
                        f"{request.mimetype or 'no content type'!r})",
                        status=415, code="unsupported_media_type")
    prediction = predict_rides(state, _request_body(), request.headers)
    return Response(answer(state, prediction), mimetype=JSON)


@ops.get("/health")
def health() -> Response:
    """Liveness and readiness: 200 when a model is loaded, 503 when none can be.

    A source with a ``health_details()`` method (level 4's registry source: the last reload
    check and its error) adds its details under ``"source"``; a sink with one (level 4's
    prediction log: rows written and dropped by this worker) under ``"sink"``.
    """
    state = _state()
    source = state.source
    extra = {}
    for name, part in (("source", source), ("sink", state.sink)):
        details = getattr(part, "health_details", None)
        if callable(details):
            extra[name] = details()
    try:
        served = source.serving()
    except ModelUnavailableError as exc:
        return json_response({"status": "unavailable", "error": "model_unavailable",
                              "message": str(exc), **extra}, 503)
    return json_response({"status": "ok", "model_version": served[0].version,
                          "models": [{"variant": s.variant, "model_version": s.version}
                                     for s in served], **extra})


@ops.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition, aggregated over gunicorn workers."""
    state = _state()
    state.show_serving()
    body, content_type = state.metrics.exposition()
    return Response(body, content_type=content_type)


@ops.get("/openapi.yaml")
def openapi() -> Response:
    """The OpenAPI 3 description of this API."""
    return Response(_state().openapi, mimetype="application/yaml")


def _remember_endpoint() -> None:
    """Note the matched route for the request counter (unknown paths stay ``unmatched``)."""
    rule = request.url_rule
    if rule is not None:
        request.environ[ENDPOINT_KEY] = rule.rule


class RequestCounter:
    """WSGI middleware around the Flask app: counts and times every response as the client gets
    it, by route, method and status, once; counting never raises.

    It sits outside Flask on purpose: an ``after_request`` function that fails turns the response
    into a 500 and Flask then skips the remaining ``after_request`` functions, so a counter
    inside Flask would miss exactly the responses that went wrong.
    """

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]], state: ServiceState) -> None:
        self.wsgi_app, self.state = wsgi_app, state

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        start = time.perf_counter()
        statuses: list[str] = []

        def recording_start_response(status: str, headers: list, exc_info: Any = None) -> Any:
            statuses.append(status)
            return start_response(status, headers, exc_info)

        try:
            return self.wsgi_app(environ, recording_start_response)
        finally:
            self._count(environ, statuses[-1] if statuses else "500", time.perf_counter() - start)

    def _count(self, environ: dict[str, Any], status: str, seconds: float) -> None:
        try:
            self.state.metrics.observe_request(environ.get(ENDPOINT_KEY, "unmatched"),
                                               environ.get("REQUEST_METHOD", ""),
                                               int(status[:3]), seconds)
        except Exception:
            self.state.report_failure("counting a request")


def _only_the_services_hooks(app: Flask) -> bool:
    """Whether ``app`` runs nothing around a view but ``create_app``'s own hooks: no other
    before/after/teardown request function and no URL processor."""
    before = [f for funcs in app.before_request_funcs.values() for f in funcs]
    others = (app.after_request_funcs, app.teardown_request_funcs,
              app.url_value_preprocessors, app.url_default_functions)
    return before == [_remember_endpoint] and not any(
        funcs for registry in others for funcs in registry.values())


#: The receivers of the signals Flask sends around a request (a receiver may connect at any
#: time: each request looks).
_SIGNAL_RECEIVERS = tuple(signal.receivers for signal in (
    request_started, request_finished, request_tearing_down, got_request_exception,
    appcontext_pushed, appcontext_popped, appcontext_tearing_down))


def _fast_json_length(environ: Mapping[str, Any], limit: int) -> int | None:
    """The Content-Length of a request the fast path takes, else None: a POST to /predict
    with ``Content-Type: application/json`` (optionally with parameters), a Content-Length of
    at most ``limit`` bytes and no Transfer-Encoding. Everything else is Flask's."""
    content_type = environ.get("CONTENT_TYPE", "")
    length = environ.get("CONTENT_LENGTH", "")
    if (environ.get("PATH_INFO") != "/predict" or environ.get("REQUEST_METHOD") != "POST"
            or not (content_type == JSON or content_type.startswith(JSON + ";"))
            or not (length.isascii() and length.isdigit())
            or "HTTP_TRANSFER_ENCODING" in environ):
        return None
    size = int(length)
    return size if size <= limit else None


class PredictFastPath:
    """WSGI middleware in front of the Flask app: a well-formed ``POST /predict`` that the
    model answers is served without Flask's per-request machinery (request and app contexts, a
    ``Request`` and a ``Response`` object, URL matching, the session, the signals), by the same
    ``predict_rides`` and ``answer`` as the view, with the view's status, headers and body.

    Anything else — another route or method, another content type, no Content-Length, a body
    over ``MAX_CONTENT_LENGTH``, and any request whose parsing, model choice or prediction
    raises — goes to Flask, with the body that was read handed back as the request's input, so
    every error keeps its one handler and its one shape. An app with other hooks (an
    ``after_request`` function, a receiver of a request or app-context signal) gets Flask for
    every request, and so does one created with ``PREDICT_FAST_PATH = False``; so does each
    process's first request, after which Flask refuses new hooks. In process a single ride costs
    80 µs this way against 383 µs through Flask (``benchmarks/bench_level2_service.py``).
    """

    def __init__(self, app: Flask, flask_wsgi_app: Callable[..., Iterable[bytes]],
                 state: ServiceState) -> None:
        self.app, self.flask_wsgi_app, self.state = app, flask_wsgi_app, state
        limit = app.config["MAX_CONTENT_LENGTH"]  # None: Flask sets no limit
        self.limit = sys.maxsize if limit is None else int(limit)
        self.enabled: bool | None = None if app.config["PREDICT_FAST_PATH"] else False

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if self.enabled is None:
            # A process's first request goes to Flask, which then refuses any new hook
            # ("can no longer be called"), so the hooks seen now are the app's for good.
            self.enabled = _only_the_services_hooks(self.app)
            return self.flask_wsgi_app(environ, start_response)
        length = _fast_json_length(environ, self.limit) if self.enabled else None
        if length is None or any(_SIGNAL_RECEIVERS):
            return self.flask_wsgi_app(environ, start_response)
        body = environ["wsgi.input"].read(length)
        try:
            if len(body) != length:
                raise EOFError("the client sent less than its Content-Length")
            prediction = predict_rides(self.state, body, EnvironHeaders(environ))
        except Exception:
            environ["wsgi.input"] = io.BytesIO(body)  # Flask reads it again and answers
            return self.flask_wsgi_app(environ, start_response)
        environ[ENDPOINT_KEY] = "/predict"
        payload = answer(self.state, prediction)
        start_response("200 OK", [("Content-Type", JSON),
                                  ("Content-Length", str(len(payload)))])
        return [payload]


def _ride_error(exc: RideError) -> Response:
    return json_response(exc.to_json(), exc.status)


def _error_response(code: str, message: str, status: int) -> Response:
    """The API's error body for an error that concerns no particular ride or field."""
    return json_response({"error": code, "message": message, "field": None, "index": None,
                          "reason": message}, status)


def _model_unavailable(exc: ModelUnavailableError) -> Response:
    return _error_response("model_unavailable", str(exc), 503)


def _http_error(exc: HTTPException) -> Response:
    """404, 405, 413… as JSON; the Allow header of a 405 is kept."""
    code = (exc.name or "error").lower().replace(" ", "_")
    message = exc.description or exc.name
    if exc.code in (404, 405):
        # the client's method and path, shown on one line and cut (they may hold anything)
        message = (f"{shown_name(request.method)} {shown_name(request.path)} is not an endpoint "
                   "of this service (see GET /openapi.yaml)")
    if exc.code == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        message = f"the body is larger than the limit of {limit} bytes: send fewer rides"
    response = _error_response(code, message, exc.code or 500)
    if exc.code == 405 and getattr(exc, "valid_methods", None):
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _internal_error(exc: Exception) -> Response:
    """An exception a view raised: logged with its traceback server-side; the client is told
    only that it failed."""
    current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
    return _error_response("internal_error", INTERNAL_ERROR_MESSAGE, 500)


def _internal_server_error(exc: InternalServerError) -> Response:
    """Every other 500 (``abort(500)``, or an exception after the view, in an after_request
    function, which Flask has logged already): the same body as :func:`_internal_error`."""
    if exc.original_exception is None:
        current_app.logger.error("500 on %s %s: %s", request.method, request.path,
                                 exc.description)
    return _error_response("internal_error", INTERNAL_ERROR_MESSAGE, 500)


_RIDE_ID_BLOCK = re.compile(
    rb"^[ \t]*# begin ACCEPT_RIDE_ID\b.*?^[ \t]*# end ACCEPT_RIDE_ID[^\n]*\n",
    re.MULTILINE | re.DOTALL)
_MAX_RIDES_LINE = re.compile(rb"^(?P<indent>[ \t]*)maxItems: \d+  # MAX_RIDES\b[^\n]*$",
                             re.MULTILINE)


def openapi_text(config: Mapping[str, Any]) -> bytes:
    """The shipped ``openapi.yaml`` as this app's configuration makes it true: the ``ride_id``
    block only when ``ACCEPT_RIDE_ID`` (an app that rejects the field must not document it), and
    the configured ``MAX_RIDES`` as the batch's ``maxItems``. The file marks both places; a test
    parses every variant and schemathesis checks the service against the one it serves."""
    text = files("level2_devops").joinpath("openapi.yaml").read_bytes()
    if not config["ACCEPT_RIDE_ID"]:
        text, removed = _RIDE_ID_BLOCK.subn(b"", text)
        if removed != 1:
            raise RuntimeError("openapi.yaml lost its ACCEPT_RIDE_ID markers")
    text, replaced = _MAX_RIDES_LINE.subn(
        lambda m: m["indent"] + b"maxItems: %d" % int(config["MAX_RIDES"]), text)
    if replaced != 1:
        raise RuntimeError("openapi.yaml lost its MAX_RIDES marker")
    return text


def _optional_fields(config: Mapping[str, Any]) -> set[str]:
    fields = set(config["RESPONSE_FIELDS"])
    if unknown := fields - set(OPTIONAL_RESPONSE_FIELDS):
        raise ValueError(f"RESPONSE_FIELDS {sorted(unknown)} are not response fields: use "
                         f"{', '.join(OPTIONAL_RESPONSE_FIELDS)}")
    return fields


def create_app(model_source: ModelSource, config: Mapping[str, Any] | None = None, *,
               sink: PredictionSink | None = None) -> Flask:
    """The Flask app serving ``model_source``; ``config`` overrides ``DEFAULT_CONFIG``; every
    served prediction goes to ``sink`` (None, level 2: nothing is recorded).

    Nothing is loaded or started here: under gunicorn the app is made once in the master and
    ``start_service`` runs in each worker after the fork. The first request loads the model if
    nobody did before; when it cannot be loaded the app still runs and ``/health`` answers 503.
    """
    app = Flask(__name__)
    app.config.from_mapping(DEFAULT_CONFIG)
    if config:
        app.config.from_mapping(config)
    fields = _optional_fields(app.config)
    state = ServiceState(model_source, ServiceMetrics(),
                         RideParser(app.config["MAX_RIDES"], app.config["ACCEPT_RIDE_ID"]),
                         openapi_text(app.config), app.logger, sink,
                         with_variant="variant" in fields, with_request_id="request_id" in fields)
    app.extensions[EXTENSION] = state
    app.register_blueprint(api)
    app.register_blueprint(ops)
    app.before_request(_remember_endpoint)
    app.register_error_handler(RideError, _ride_error)
    app.register_error_handler(ModelUnavailableError, _model_unavailable)
    app.register_error_handler(InternalServerError, _internal_server_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)
    app.wsgi_app = RequestCounter(  # type: ignore[method-assign]
        PredictFastPath(app, app.wsgi_app, state), state)
    return app


def start_service(app: Flask) -> None:
    """Start the app's model source and sink in this process, once: gunicorn calls it in each
    worker after the fork (``post_fork``); in-process users (tests) call it themselves."""
    state: ServiceState = app.extensions[EXTENSION]
    pid = os.getpid()
    if state.started_in == pid:
        return
    state.source.start()
    if state.sink is not None:
        state.sink.start()
    state.started_in = pid
    state.show_serving()


def refresh_before_fork(app: Flask) -> None:
    """In the gunicorn master, before each worker is forked (``pre_fork``): a model source with
    a ``refresh_before_fork()`` method (level 4's registry source) brings its models up to date,
    so that the new worker starts with what it should serve now. Errors are logged; the fork
    goes on."""
    state: ServiceState = app.extensions[EXTENSION]
    refresh = getattr(state.source, "refresh_before_fork", None)
    if callable(refresh):
        try:
            refresh()
        except Exception:
            app.logger.exception("refreshing the model source before a fork failed")


def close_service(app: Flask) -> None:
    """Close the sink (it writes what is queued) and the source, in the process that started
    them; anywhere else (gunicorn may call ``worker_exit`` in the master) it does nothing."""
    state: ServiceState = app.extensions[EXTENSION]
    if state.started_in != os.getpid():
        return
    state.started_in = None
    for part, name in ((state.sink, "the prediction sink"), (state.source, "the model source")):
        if part is None:
            continue
        try:
            part.close()
        except Exception:
            app.logger.exception("closing %s failed", name)
