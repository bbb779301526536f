"""Fuzzing the HTTP services in-process (levels 2 and 4): schemathesis from the OpenAPI document
the app serves, and hypothesis strategies of our own for what a schema does not describe.

Both drive the Flask app through its WSGI interface (no socket: thousands of requests a second)
and check every response with :func:`check_response`: never a 5xx; every 4xx a JSON error whose
``error`` is a documented code and whose ``message`` is one printable line naming the field (and
the ride's index) at fault; a 2xx prediction has one finite duration per ride sent.

:class:`Tally` counts what was sent, by status, so the test can assert how many requests ran and
the README can give the figure.

* :func:`run_schemathesis`: positive and negative cases generated from the served
  ``/openapi.yaml``, each checked by schemathesis's own checks (status codes, content types and
  response bodies conform to the document; schema-valid data is accepted, invalid data rejected).
* :func:`run_raw`: bodies as bytes: malformed JSON, wrong types, huge and tiny numbers as
  literals, NaN and infinities, unicode (and bytes that are not UTF-8), missing and extra fields,
  oversized bodies and lists, wrong content types, methods and paths.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from level2_devops.service.rides import FIELDS, MAX_RIDE_ID_LENGTH, RIDE_ID, shown_name

#: The ``error`` codes openapi.yaml documents (components.schemas.Error.error).
ERROR_CODES = frozenset({"malformed_json", "invalid_body", "invalid_batch", "invalid_ride",
                         "unsupported_media_type", "request_entity_too_large", "not_found",
                         "method_not_allowed", "model_unavailable"})
ROUTES = ("/predict", "/health", "/metrics", "/openapi.yaml")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND")
JSON = "application/json"
VALID_RIDE = {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}
#: schemathesis's own defaults, except that invalid data may also be refused with 413: a
#: negative case can be a body of megabytes, and "too large" is the right answer to it.
SCHEMATHESIS_CONFIG = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {
    "expected-statuses": ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
                          "428", "429"]}}})
_SETTINGS = dict(deadline=None, database=None, phases=[Phase.generate],
                 suppress_health_check=list(HealthCheck))


@dataclass
class Tally:
    """Requests sent, by status code, and the responses that broke a rule."""

    statuses: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    rides_served: int = 0  # predictions in 2xx answers to POST /predict

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def add(self, status: int, problem: str | None = None) -> None:
        """Count one response, and what is wrong with it if anything."""
        self.statuses[status] += 1
        if problem is not None:
            self.note(problem)

    def note(self, problem: str) -> None:
        """Keep a problem (the first 20: enough to see what broke)."""
        if len(self.problems) < 20:
            self.problems.append(problem)


def error_problem(status: int, body: bytes, content_type: str) -> str | None:
    """What is wrong with a 4xx response, or None: it must be a JSON error with a documented
    code and a one-line message that names the field and the ride index at fault."""
    if not content_type.startswith(JSON):
        return f"{status} is not JSON ({content_type!r}): {body[:200]!r}"
    try:
        error = json.loads(body)
    except ValueError:
        return f"{status} body is not JSON: {body[:200]!r}"
    if not isinstance(error, dict) or error.get("error") not in ERROR_CODES:
        return f"{status} has no documented error code: {body[:300]!r}"
    message = error.get("message")
    if not isinstance(message, str) or not message or not message.isprintable():
        return f"{status} message is not one printable line: {message!r}"
    if len(message) > 400:
        return f"{status} message is {len(message)} characters long"
    if error.get("field") is not None and shown_name(error["field"]) not in message:
        return f"{status} message does not name the field {error['field']!r}: {message!r}"
    if error.get("index") is not None and f"rides[{error['index']}]" not in message:
        return f"{status} message does not name rides[{error['index']}]: {message!r}"
    return None


def success_problem(tally: Tally, path: str, method: str, body: bytes, sent: bytes
                    ) -> str | None:
    """What is wrong with a 2xx answer to POST /predict: one finite duration per ride sent (the
    rides are counted in ``tally.rides_served``)."""
    if path.partition("?")[0] != "/predict" or method != "POST":
        return None
    try:
        answer, rides = json.loads(body), json.loads(sent)
    except ValueError as exc:
        return f"200 for a body that is not JSON ({exc}): {sent[:200]!r}"
    answers = answer if isinstance(answer, list) else [answer]
    expected = len(rides) if isinstance(rides, list) else 1
    if isinstance(answer, list) != isinstance(rides, list) or len(answers) != expected:
        return f"200 with {len(answers)} predictions for {expected} rides"
    if not all(isinstance(a.get("duration"), float) and math.isfinite(a["duration"])
               for a in answers):
        return f"200 with a non-finite or missing duration: {body[:200]!r}"
    tally.rides_served += len(answers)
    return None


def check_response(tally: Tally, method: str, path: str, status: int, body: bytes,
                   content_type: str, sent: bytes = b"") -> None:
    """Count one response and note what is wrong with it (see the module docstring)."""
    if status >= 500:
        problem: str | None = f"{status} for {method} {path} {sent[:200]!r}: {body[:300]!r}"
    elif 400 <= status < 500 and method == "HEAD":  # no body: the headers say JSON
        problem = None if content_type.startswith(JSON) else f"HEAD {path}: {content_type!r}"
    elif 400 <= status < 500:
        problem = error_problem(status, body, content_type)
        problem = problem and f"{method} {path} {sent[:200]!r}: {problem}"
    elif 200 <= status < 300:
        problem = success_problem(tally, path, method, body, sent)
    else:
        problem = f"unexpected status {status} for {method} {path}"
    tally.add(status, problem)


# --- schemathesis ---------------------------------------------------------------------------

def run_schemathesis(app: Any, tally: Tally, examples: int) -> None:
    """``examples`` positive and ``examples`` negative cases across every operation of the
    document a WSGI ``app`` serves, each sent to ``app`` in-process and checked by
    schemathesis's checks and by :func:`check_response`; a schemathesis check that fails is a
    problem in ``tally``."""
    schema = schemathesis.openapi.from_wsgi("/openapi.yaml", app, config=SCHEMATHESIS_CONFIG)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        _schemathesis_mode(schema, mode, tally, examples)


def run_schemathesis_http(base_url: str, tally: Tally, examples: int) -> None:
    """The same against a live server at ``base_url`` (real HTTP: gunicorn's parser too)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.yaml",
                                           config=SCHEMATHESIS_CONFIG)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        _schemathesis_mode(schema, mode, tally, examples, base_url)


def _schemathesis_mode(schema: Any, mode: GenerationMode, tally: Tally, examples: int,
                       base_url: str | None = None) -> None:
    @settings(max_examples=examples, **_SETTINGS)
    @given(case=schema.as_strategy(generation_mode=mode))
    def send(case: Any) -> None:
        response = case.call(base_url=base_url, timeout=30)
        content_type = (response.headers.get("content-type") or [""])[0]
        sent = response.request.body or b""
        check_response(tally, case.method, case.path, response.status_code, response.content,
                       content_type, sent.encode() if isinstance(sent, str) else sent)
        try:
            case.validate_response(response, transport_kwargs={"base_url": base_url}
                                   if base_url else None)
        except BaseExceptionGroup as failures:  # schemathesis's FailureGroup
            text = str(failures)  # the failure, then the body sent (as a curl command)
            shown = text if len(text) < 3000 else f"{text[:1000]} ... {text[-2000:]}"
            tally.note(f"schemathesis ({mode.value}) {case.operation.label}: {shown}")

    send()


# --- hypothesis strategies of our own -------------------------------------------------------

_NUMBER_LITERALS = ("1e400", "-1e400", "1e-400", "-0", "-0.0", "0e0", "1E+2", "NaN", "-NaN",
                    "Infinity", "-Infinity", "123456789012345678901234567890",
                    "-9223372036854775809", "18446744073709551616", "0.1e-323", "2.5e308",
                    "1.7976931348623157e308", "5e-324", "00", "01", "+1", ".5", "5.", "0x10",
                    "1_000")


@st.composite
def json_values(draw: st.DrawFn) -> str:
    """One JSON value as text, valid or not: numbers of every size (as literals msgspec and
    Python read differently), NaN and infinities, unicode strings, booleans, null, containers."""
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return draw(st.sampled_from(_NUMBER_LITERALS))
    if kind == 1:
        return str(draw(st.integers(-(2**70), 2**70)))
    if kind == 2:
        return json.dumps(draw(st.floats(allow_nan=True, allow_infinity=True)))
    if kind == 3:
        return json.dumps(draw(st.text(max_size=20)), ensure_ascii=draw(st.booleans()))
    if kind == 4:
        return draw(st.sampled_from(("true", "false", "null", "[]", "{}", '""', "[1]")))
    if kind == 5:
        return str(draw(st.integers(-5, 300)))  # near and beyond the zone range
    if kind == 6:
        return repr(draw(st.floats(-10, 250, allow_nan=False)))  # near the distance range
    return json.dumps(draw(st.text(min_size=MAX_RIDE_ID_LENGTH - 2,
                                   max_size=MAX_RIDE_ID_LENGTH + 2)))


@st.composite
def ride_objects(draw: st.DrawFn) -> str:
    """A ride object as JSON text: the known fields, each present or missing, with any value,
    and maybe extra fields with any name (unicode, control characters, very long)."""
    names = [n for n in (*FIELDS, RIDE_ID) if draw(st.integers(0, 5)) > 0]
    extra = draw(st.lists(st.one_of(st.text(max_size=10), st.sampled_from(
        ("a\nb", "`x` - at `$.y`", "x" * 5000, "\u2028", "\x00", "ride_ID"))), max_size=2))
    members = [f"{json.dumps(n, ensure_ascii=draw(st.booleans()))}: {draw(json_values())}"
               for n in [*names, *extra]]
    return "{" + ", ".join(draw(st.permutations(members))) + "}"


@st.composite
def valid_rides(draw: st.DrawFn) -> str:
    """A ride every service must answer with 200."""
    return json.dumps({"PULocationID": draw(st.integers(1, 265)),
                       "DOLocationID": draw(st.integers(1, 265)),
                       "trip_distance": draw(st.one_of(
                           st.floats(0, 200), st.integers(0, 200), st.just(5e-324)))})


@st.composite
def bodies(draw: st.DrawFn, max_rides: int, max_bytes: int) -> tuple[bytes, bool]:
    """A request body and whether it is valid (so must be answered with 200)."""
    kind = draw(st.integers(0, 11))
    if kind <= 1:
        return draw(valid_rides()).encode(), True
    if kind == 2:
        return ("[" + ", ".join(draw(st.lists(valid_rides(), min_size=1, max_size=30)))
                + "]").encode(), True
    if kind == 3:
        return draw(ride_objects()).encode(), False
    if kind == 4:
        items = draw(st.lists(st.one_of(ride_objects(), valid_rides(), json_values()),
                              max_size=8))
        return ("[" + ", ".join(items) + "]").encode(), False
    if kind == 5:  # valid JSON, then broken: truncated, or a byte changed
        text = draw(valid_rides()).encode()
        cut = draw(st.integers(0, len(text) - 1))
        if draw(st.booleans()):
            return text[:cut], False
        return text[:cut] + bytes([draw(st.integers(0, 255))]) + text[cut + 1:], False
    if kind == 6:
        return draw(st.binary(max_size=64)), False
    if kind == 7:  # not UTF-8, inside an otherwise good ride
        junk = draw(st.sampled_from((b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xf8\x88\x80")))
        return b'{"PULocationID": 1, "' + junk + b'": 2}', False
    if kind == 8:  # lists at and beyond the limit
        n = draw(st.sampled_from((0, max_rides, max_rides + 1)))
        return ("[" + ", ".join([json.dumps(VALID_RIDE)] * n) + "]").encode(), 0 < n <= max_rides
    if kind == 9:  # bodies at and beyond the byte limit
        over = draw(st.sampled_from((max_bytes + 1, 2 * max_bytes)))
        return b"[" + b" " * (over - 2) + b"]", False
    if kind == 10:  # nested deeply
        depth = draw(st.integers(1, 5000))
        return b"[" * depth + b"]" * depth, False
    return draw(json_values()).encode(), False


_CONTENT_TYPES = (JSON, f"{JSON}; charset=utf-8", "APPLICATION/JSON", "text/plain",
                  "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                  "application/jsonx", "application/problem+json", "application/*", "*/*")
_ODD_PATHS = ("predict/", "PREDICT", "%ff", "..%2f..%2fetc%2fpasswd", "predict%00", "metrics/x",
              "openapi.json", "predict?x=1")


@dataclass(frozen=True)
class Variations:
    """What one generated example sends besides ``POST /predict`` as JSON: the same body with
    another content type (or none), and with another method and path."""

    content_type: str | None
    method: str
    path: str


def _as_path(text: str) -> str:
    """Any text as a client sends it in a request line: percent-encoded UTF-8, and never
    ``//...`` (which a client would read as a host name)."""
    return "/" + quote(text.lstrip("/"), safe="/%")


@st.composite
def variations(draw: st.DrawFn) -> Variations:
    content_type = draw(st.one_of(st.sampled_from(_CONTENT_TYPES), st.none(), st.text(
        st.characters(min_codepoint=32, max_codepoint=126), max_size=30)))
    path = draw(st.one_of(st.sampled_from(ROUTES), st.sampled_from(_ODD_PATHS).map("/".__add__),
                          st.text(max_size=20).map(_as_path)))
    return Variations(content_type, draw(st.sampled_from(METHODS)), path)


def _is_json(content_type: str | None) -> bool:
    return content_type is not None and re.fullmatch(
        r"application/json\s*(;.*)?", content_type.strip(), re.IGNORECASE | re.DOTALL) is not None


def run_raw(client: Any, tally: Tally, examples: int, *, max_rides: int, max_bytes: int) -> None:
    """``examples`` generated bodies (:func:`bodies`), each sent three times through a Flask test
    ``client``: ``POST /predict`` as JSON, then with another content type, then with another
    method and path (:func:`variations`). A valid body sent as JSON must get 200; every answer
    passes :func:`check_response`."""
    def send(method: str, path: str, content_type: str | None, body: bytes,
             valid: bool) -> None:
        headers = {} if content_type is None else {"Content-Type": content_type}
        response = client.open(path, method=method, data=body, headers=headers)
        check_response(tally, method, path, response.status_code, response.get_data(),
                       response.content_type or "", body)
        if valid and response.status_code != 200:
            tally.note(f"valid request refused: {method} {path} {content_type!r} "
                       f"{body[:200]!r} -> {response.status_code} {response.get_data()[:300]!r}")

    @settings(max_examples=examples, **_SETTINGS)
    @given(body=bodies(max_rides, max_bytes), other=variations())
    def send_three(body: tuple[bytes, bool], other: Variations) -> None:
        data, valid = body
        send("POST", "/predict", JSON, data, valid)
        send("POST", "/predict", other.content_type, data, valid and _is_json(other.content_type))
        send(other.method, other.path, JSON, data,
             valid and (other.method, other.path) == ("POST", "/predict"))

    send_three()


def summary(tallies: Iterable[Tally]) -> str:
    """One line: requests sent and the status codes seen."""
    total = Tally()
    for tally in tallies:
        total.statuses.update(tally.statuses)
    return (f"{total.requests} requests, {total.server_errors} 5xx, statuses "
            f"{dict(sorted(total.statuses.items()))}")
