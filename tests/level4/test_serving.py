"""The level-4 service in-process (Flask test client) on a real MLflow registry and a real
prediction log: fields, promotion, A/B split, shadow, registry down."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from level2_devops.app import close_service, create_app, start_service
from level3_training.registry import client_for, promote
from level4_deployment.log_writer import PredictionLogWriter
from level4_deployment.serving import APP_CONFIG, PredictionLogSink, RegistrySource
from level4_deployment.store import engine_for, prediction_summary
from taxi_common.local_servers import free_port
from taxi_common.settings import Settings

RIDE = {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 1.8}


def _service(settings: Settings, **options: Any) -> tuple[Any, RegistrySource]:
    source = RegistrySource(settings, reload_interval=60, **options)
    writer = PredictionLogWriter.for_settings(settings, flush_interval=0.05)
    app = create_app(source, APP_CONFIG, sink=PredictionLogSink(writer, source))
    return app, source


@pytest.fixture
def started() -> Iterator[list[Any]]:
    """Apps appended to the list are started by the test and closed here."""
    apps: list[Any] = []
    yield apps
    for app in apps:
        close_service(app)


def _start(app: Any, started: list[Any], source: RegistrySource) -> Any:
    source.watcher.check()  # as the master does before the fork
    start_service(app)
    started.append(app)
    return app.test_client()


def test_serves_the_champion_with_version_variant_request_id_and_follows_a_promotion(
        settings: Settings, registrar: Callable[..., str], started: list[Any]) -> None:
    first = registrar(settings, "linear", "champion")
    app, source = _service(settings)
    client = _start(app, started, source)
    body = client.post("/predict", json={**RIDE, "ride_id": "r-1"}).get_json()
    assert body["model_version"] == first and body["variant"] == "champion"
    assert len(body["request_id"]) == 32
    health = client.get("/health").get_json()
    assert health["status"] == "ok"
    assert health["source"]["versions"] == {"champion": first}
    assert health["source"]["last_error"] is None and health["source"]["last_check"]

    second = registrar(settings, "ridge", "challenger")
    promote(client_for(settings.tracking_uri), second)
    assert source.watcher.check()
    assert client.post("/predict", json=RIDE).get_json()["model_version"] == second
    batch = client.post("/predict", json=[RIDE, RIDE]).get_json()
    assert [b["model_version"] for b in batch] == [second, second]
    close_service(app)
    started.clear()
    summary = prediction_summary(engine_for(settings))
    assert summary["total"] == 4
    assert summary["by_version"] == {first: 1, second: 3}


def test_ab_split_is_p_percent_and_sticky_by_ride_id(
        settings: Settings, registrar: Callable[..., str], started: list[Any]) -> None:
    champion = registrar(settings, "linear", "champion")
    challenger = registrar(settings, "ridge", "challenger")
    app, source = _service(settings, challenger_share=0.2)
    client = _start(app, started, source)
    n, share = 5000, 0.2
    variants = {}
    for i in range(n):
        body = client.post("/predict", json={**RIDE, "ride_id": f"ride-{i}"}).get_json()
        variants[f"ride-{i}"] = body["variant"]
        expected = challenger if body["variant"] == "challenger" else champion
        assert body["model_version"] == expected
    hits = sum(v == "challenger" for v in variants.values())
    assert abs(hits - n * share) <= 4 * math.sqrt(n * share * (1 - share))
    for ride_id in list(variants)[:200]:  # the same ride, again: the same variant
        again = client.post("/predict", json={**RIDE, "ride_id": ride_id}).get_json()
        assert again["variant"] == variants[ride_id]
    # another app (another worker, a restart) assigns every ride the same way
    other, other_source = _service(settings, challenger_share=0.2)
    other_client = _start(other, started, other_source)
    for ride_id in list(variants)[:200]:
        body = other_client.post("/predict", json={**RIDE, "ride_id": ride_id}).get_json()
        assert body["variant"] == variants[ride_id]
    assert {s["variant"] for s in client.get("/health").get_json()["models"]} == {
        "champion", "challenger"}


def test_shadow_logs_the_challengers_prediction_beside_the_champions(
        settings: Settings, registrar: Callable[..., str], started: list[Any],
        pipelines: dict[str, Any]) -> None:
    import pandas as pd
    from sqlalchemy import select

    from level4_deployment.store import predictions

    registrar(settings, "linear", "champion")
    challenger = registrar(settings, "mean", "challenger")
    app, source = _service(settings, shadow=True)
    client = _start(app, started, source)
    for i in range(20):
        body = client.post("/predict", json={**RIDE, "trip_distance": 1.0 + i,
                                             "ride_id": f"s{i}"}).get_json()
        assert body["variant"] == "champion"  # shadow serves nothing
    close_service(app)
    started.clear()
    with engine_for(settings).connect() as conn:
        rows = pd.DataFrame(conn.execute(select(predictions)).mappings().all())
    assert len(rows) == 20 and (rows["shadow_version"] == challenger).all()
    mean = float(pipelines["mean"].predict(pd.DataFrame([RIDE]))[0])
    assert rows["shadow_prediction"].round(9).eq(round(mean, 9)).all()
    assert rows["prediction"].nunique() == 20


def test_registry_down_at_start_is_not_ready_with_a_clear_message(
        settings: Settings, monkeypatch: pytest.MonkeyPatch, started: list[Any]) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    down = Settings(workbook_home=settings.workbook_home,
                    mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
    app, source = _service(down)
    client = _start(app, started, source)
    health = client.get("/health")
    assert health.status_code == 503
    message = health.get_json()["message"]
    assert "no champion loaded yet" in message and "could not be read" in message
    assert "retrying" in message
    response = client.post("/predict", json=RIDE)
    assert response.status_code == 503
    assert response.get_json()["error"] == "model_unavailable"


def test_no_champion_says_how_to_get_one(settings: Settings, registrar: Callable[..., str],
                                         started: list[Any]) -> None:
    registrar(settings, "linear", "challenger")
    app, source = _service(settings)
    client = _start(app, started, source)
    message = client.get("/health").get_json()["message"]
    assert "has no @champion" in message and "level4 deploy" in message


def test_the_master_refreshes_the_champion_before_each_fork(
        settings: Settings, registrar: Callable[..., str]) -> None:
    """gunicorn's ``pre_fork``: a worker forked after a promotion (a replacement, or every
    worker after a HUP) starts with the new champion, not the one loaded at start."""
    from level2_devops.app import refresh_before_fork

    first = registrar(settings, "linear", "champion")
    second = registrar(settings, "ridge", "challenger")
    source = RegistrySource(settings, reload_interval=0.05)
    app = create_app(source, APP_CONFIG)
    assert source.load_in_master(10)
    promote(client_for(settings.tracking_uri), second)
    assert source.watcher.get("champion").version == first
    refresh_before_fork(app)
    assert source.watcher.get("champion").version == second
    assert source.watcher._thread is None  # no thread in the master, nothing held across a fork
