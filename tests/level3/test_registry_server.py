"""The registry through a real ``mlflow server`` when the server fails: promote and rollback stop
with one line and leave every alias as it was.

Two kinds of failure, both real:
- a registry outage behind a load balancer: a small HTTP proxy on 127.0.0.1 forwards every request
  to the real server but answers 503 to chosen ones (MLflow's client retries them, bounded here);
- the server stopped: nothing answers at its URL; afterwards the aliases are read from the server's
  own SQLite store.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from level2_devops.models import build_model
from level3_training.mlflow_server import MlflowServer, start_mlflow_server
from level3_training.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    RegistrationError,
    RegistryError,
    alias_version,
    client_for,
    get_version,
    list_versions,
    load_version,
    promote,
    register_version,
    rollback,
)
from level3_training.tracking import configure_tracking, log_pipeline_model, start_run
from taxi_common.settings import Settings

pytestmark = pytest.mark.slow
ALIAS_ENDPOINT = "/api/2.0/mlflow/registered-models/alias"
MODEL_ENDPOINT = "/api/2.0/mlflow/registered-models/get"
VERSION_ENDPOINT = "/api/2.0/mlflow/model-versions/get"
CREATE_ENDPOINT = "/api/2.0/mlflow/registered-models/create"


def _start_mlflow_server(folder: Path) -> MlflowServer:
    """`mlflow server` on a free port with a SQLite store and an artifact folder in ``folder``."""
    return start_mlflow_server(f"sqlite:///{folder / 'server.db'}", folder / "artifacts",
                               folder / "mlflow-server.log")


@pytest.fixture(autouse=True)
def bounded_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's HTTP client retries a failed request once, without back-off (level 3 sets 2 / 1)."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One `mlflow server` for the module (each test uses its own registered model name)."""
    running = _start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield running
    finally:
        running.stop()


def _log_tiny_model(tracking_uri: str, home: Path) -> tuple[str, str]:
    """(logged model ID, run ID) of a tiny linear pipeline logged to ``tracking_uri``."""
    settings = Settings(workbook_home=home, mlflow_tracking_uri=tracking_uri)
    experiment_id = configure_tracking(settings)
    x = pd.DataFrame({"PULocationID": [1, 2, 3, 4] * 10, "DOLocationID": [5, 6, 7, 8] * 10,
                      "trip_distance": np.linspace(0.5, 9, 40)})
    pipeline = build_model("linear").fit(x, 3 * x["trip_distance"].to_numpy() + 2)
    client = client_for(tracking_uri)
    run_id = start_run(client, experiment_id, "tiny")
    return log_pipeline_model(client, run_id, pipeline, x.head(3)).model_id, run_id


@pytest.fixture(scope="module")
def tiny_model(server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A tiny model logged once through the server: (logged model ID, run ID)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        return _log_tiny_model(server.url, tmp_path_factory.mktemp("client"))


def _three_versions_champion_2_previous_1(client: Any, model: tuple[str, str]) -> str:
    """A fresh registered model with versions 1-3: champion 2, previous 1, challenger 3."""
    name = f"taxi-duration-{uuid.uuid4().hex[:8]}"
    uri, run_id = model
    for _ in range(3):
        register_version(client, uri, run_id, description="d", tags={}, name=name)
    promote(client, "1", name)
    promote(client, "2", name)
    assert _aliases(client, name) == {CHAMPION: "2", PREVIOUS: "1", CHALLENGER: "3"}
    return name


def _aliases(client: Any, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


# --- a proxy that fails chosen requests -----------------------------------------------------------

@dataclass
class FaultyProxy:
    """Forwards requests to ``upstream``; answers 503 to (method, path) pairs in ``failing``."""

    upstream: str
    failing: set[tuple[str, str]] = field(default_factory=set)
    seen: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""


def _proxy_handler(proxy: FaultyProxy) -> type[http.server.BaseHTTPRequestHandler]:
    host, port = proxy.upstream.removeprefix("http://").split(":")

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib
            pass

        def _forward(self) -> None:
            path = self.path.split("?")[0]
            proxy.seen.append((self.command, path))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if (self.command, path) in proxy.failing:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            connection.request(self.command, self.path, body=body or None, headers=headers)
            answer = connection.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            connection.close()

        do_GET = do_POST = do_PATCH = do_DELETE = _forward  # noqa: N815 - stdlib names

    return Handler


@pytest.fixture
def proxy(server: MlflowServer) -> Iterator[FaultyProxy]:
    """A faulty proxy in front of the server, on 127.0.0.1; stopped afterwards."""
    faulty = FaultyProxy(server.url)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(faulty))
    faulty.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield faulty
    finally:
        httpd.shutdown()
        httpd.server_close()


def _assert_one_line(error: pytest.ExceptionInfo[BaseException], *parts: str) -> None:
    text = str(error.value)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, text


# --- the tests ----------------------------------------------------------------------------------

def test_promote_and_rollback_during_a_registry_outage_change_nothing(
        server: MlflowServer, proxy: FaultyProxy, tiny_model: tuple[str, str]) -> None:
    direct = client_for(server.url)
    name = _three_versions_champion_2_previous_1(direct, tiny_model)
    proxy.failing = {("GET", ALIAS_ENDPOINT), ("GET", MODEL_ENDPOINT)}
    through_proxy = client_for(proxy.url)

    with pytest.raises(RegistryError) as error:
        promote(through_proxy, "3", name, reason="better", actor="test")
    _assert_one_line(error, proxy.url, "nothing was changed")
    with pytest.raises(RegistryError) as error:
        rollback(through_proxy, reason="bad", actor="test", name=name)
    _assert_one_line(error, proxy.url, "nothing was changed")
    assert not [call for call in proxy.seen if call[0] != "GET"], "a write was sent"
    assert _aliases(direct, name) == {CHAMPION: "2", PREVIOUS: "1", CHALLENGER: "3"}
    assert "promotion.promoted_at" not in direct.get_model_version(name, "3").tags


def test_an_alias_endpoint_outage_is_an_error_and_never_loses_previous(
        server: MlflowServer, proxy: FaultyProxy, tiny_model: tuple[str, str]) -> None:
    direct = client_for(server.url)
    name = _three_versions_champion_2_previous_1(direct, tiny_model)
    proxy.failing = {("GET", ALIAS_ENDPOINT)}
    through_proxy = client_for(proxy.url)
    with pytest.raises(RegistryError) as error:  # it was None: "there is no champion"
        alias_version(through_proxy, CHAMPION, name)
    _assert_one_line(error, proxy.url, f"@{CHAMPION}")
    # promote reads all aliases in one request (registered-models/get), so it does not need the
    # failing endpoint; when it read "no champion" from the outage, it moved champion to 3 and
    # left previous at 1: version 2, the champion it replaced, was lost
    assert promote(through_proxy, "3", name) == {CHAMPION: "3", PREVIOUS: "2"}
    assert _aliases(direct, name) == {CHAMPION: "3", PREVIOUS: "2"}


def test_reads_during_an_outage_are_errors_not_empty_answers(
        server: MlflowServer, proxy: FaultyProxy, tiny_model: tuple[str, str]) -> None:
    name = _three_versions_champion_2_previous_1(client_for(server.url), tiny_model)
    through_proxy = client_for(proxy.url)
    proxy.failing = {("GET", VERSION_ENDPOINT)}
    with pytest.raises(RegistryError) as error:  # not "taxi-duration has no version 2"
        get_version(through_proxy, "2", name)
    _assert_one_line(error, proxy.url)
    proxy.failing = {("GET", MODEL_ENDPOINT)}
    with pytest.raises(RegistryError):  # not "no versions yet"
        list_versions(through_proxy, name)
    uri, run_id = tiny_model
    with pytest.raises(RegistrationError):
        register_version(through_proxy, uri, run_id, description="d", tags={}, name=name)
    assert ("POST", CREATE_ENDPOINT) not in proxy.seen  # did not read the outage as "no model"
    assert [row["version"] for row in list_versions(client_for(server.url), name)] == \
        ["3", "2", "1"]


def test_a_failed_alias_write_puts_back_the_aliases_already_moved(
        server: MlflowServer, proxy: FaultyProxy, tiny_model: tuple[str, str]) -> None:
    direct = client_for(server.url)
    name = _three_versions_champion_2_previous_1(direct, tiny_model)
    proxy.failing = {("DELETE", ALIAS_ENDPOINT)}  # setting aliases works, deleting one fails
    through_proxy = client_for(proxy.url)
    # promote 3 moves @previous to 2 and @champion to 3, then fails to drop @challenger from 3
    with pytest.raises(RegistryError) as error:
        promote(through_proxy, "3", name, reason="r", actor="a")
    _assert_one_line(error, "nothing was changed")
    assert ("POST", ALIAS_ENDPOINT) in proxy.seen  # the moves were made, and undone
    assert _aliases(direct, name) == {CHAMPION: "2", PREVIOUS: "1", CHALLENGER: "3"}
    # rollback moves @champion to 1, then fails to clear @previous
    with pytest.raises(RegistryError) as error:
        rollback(through_proxy, reason="r", actor="a", name=name)
    _assert_one_line(error, "nothing was changed")
    assert _aliases(direct, name) == {CHAMPION: "2", PREVIOUS: "1", CHALLENGER: "3"}


def test_load_version_downloads_through_the_server_it_was_given(
        server: MlflowServer, tiny_model: tuple[str, str]) -> None:
    import mlflow

    client = client_for(server.url)
    name = _three_versions_champion_2_previous_1(client, tiny_model)
    global_uri = mlflow.get_tracking_uri()  # not the server: the files must come through client
    assert global_uri != server.url
    version, pipeline = load_version(client, "champion", name)
    trips = pd.DataFrame({"PULocationID": [1, 2], "DOLocationID": [5, 6],
                          "trip_distance": [1.0, 3.0]})
    assert version == "2" and pipeline.predict(trips) == pytest.approx([5.0, 11.0], abs=1e-6)
    assert mlflow.get_tracking_uri() == global_uri


def test_promote_and_rollback_against_a_stopped_server_change_nothing(tmp_path: Path) -> None:
    own = _start_mlflow_server(tmp_path)
    try:
        client = client_for(own.url)
        name = _three_versions_champion_2_previous_1(
            client, _log_tiny_model(own.url, tmp_path / "client"))
    finally:
        own.stop()  # mid-way: the registry is set up, the next command finds no server

    for attempt in (lambda: promote(client, "3", name, reason="r", actor="a"),
                    lambda: rollback(client, reason="r", actor="a", name=name)):
        with pytest.raises(RegistryError) as error:
            attempt()
        _assert_one_line(error, own.url, "nothing was changed")
    store = client_for(own.store_uri)  # the server's own store, read directly
    assert _aliases(store, name) == {CHAMPION: "2", PREVIOUS: "1", CHALLENGER: "3"}
