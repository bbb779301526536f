"""The alias watcher against a real MLflow registry (SQLite store): follow, keep, recover."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from level4_deployment.watcher import AliasWatcher


class FlakyRegistry:
    """Aliases resolved through a real MlflowClient; ``down`` makes every call fail like an
    unreachable server would."""

    def __init__(self, client: object, name: str) -> None:
        self.client, self.name, self.down = client, name, False
        self.loads: list[str] = []

    def resolve(self) -> dict[str, str]:
        if self.down:
            raise ConnectionError("registry at 127.0.0.1:9 refused the connection")
        model = self.client.get_registered_model(self.name)
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def load(self, version: str) -> str:
        self.loads.append(version)
        return f"model-{version}"


@pytest.fixture
def registry(tmp_path: Path) -> FlakyRegistry:
    """A registered model with three versions (sources are placeholders: loading is ours)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    for _ in range(3):
        client.create_model_version("m", source=str(tmp_path))
    client.set_registered_model_alias("m", "champion", "1")
    return FlakyRegistry(client, "m")


def test_follows_an_alias_loads_each_pinned_version_once_and_drops_an_unset_alias(
        registry: FlakyRegistry) -> None:
    watcher = AliasWatcher(["champion", "challenger"], registry.resolve, registry.load)
    assert watcher.check()
    assert watcher.get("champion").model == "model-1"
    assert watcher.get("challenger") is None
    assert not watcher.check()  # nothing moved: nothing loaded
    assert registry.loads == ["1"]
    registry.client.set_registered_model_alias("m", "challenger", "2")
    registry.client.set_registered_model_alias("m", "champion", "2")
    assert watcher.check()
    assert registry.loads == ["1", "2"]  # the same version for two aliases is loaded once
    assert watcher.get("challenger").version == watcher.get("champion").version == "2"
    registry.client.delete_registered_model_alias("m", "challenger")
    assert watcher.check() and watcher.get("challenger") is None


def test_registry_down_keeps_serving_the_last_good_model_and_says_so(
        registry: FlakyRegistry) -> None:
    watcher = AliasWatcher(["champion"], registry.resolve, registry.load)
    watcher.check()
    registry.down = True
    assert not watcher.check()
    assert watcher.get("champion").version == "1"
    status = watcher.status()
    assert status["versions"] == {"champion": "1"}
    assert "refused the connection" in status["last_error"]
    registry.down = False
    registry.client.set_registered_model_alias("m", "champion", "3")
    assert watcher.check()
    assert watcher.status()["last_error"] is None and watcher.get("champion").version == "3"


def test_a_failed_load_changes_nothing(registry: FlakyRegistry) -> None:
    def load(version: str) -> str:
        if version == "2":
            raise OSError("artifact store unreachable")
        return f"model-{version}"

    watcher = AliasWatcher(["champion"], registry.resolve, load)
    watcher.check()
    registry.client.set_registered_model_alias("m", "champion", "2")
    assert not watcher.check()
    assert watcher.get("champion").version == "1"
    assert "artifact store unreachable" in watcher.status()["last_error"]


def test_background_thread_follows_a_promotion_and_readers_never_see_a_gap(
        registry: FlakyRegistry) -> None:
    watcher = AliasWatcher(["champion"], registry.resolve, registry.load, interval=0.1)
    assert watcher.wait_until_loaded("champion", timeout=5)
    seen: set[str] = set()
    gaps = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            model = watcher.get("champion")
            if model is None:
                gaps.append(1)
            else:
                seen.add(model.version)

    reader = threading.Thread(target=read)
    reader.start()
    watcher.start()
    try:
        registry.client.set_registered_model_alias("m", "champion", "3")
        deadline = time.monotonic() + 10
        while watcher.get("champion").version != "3" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        reader.join()
        watcher.close()
    assert watcher.get("champion").version == "3"
    assert seen == {"1", "3"} and not gaps


def test_start_while_the_registry_is_down_is_not_ready_until_it_answers(
        registry: FlakyRegistry) -> None:
    registry.down = True
    watcher = AliasWatcher(["champion"], registry.resolve, registry.load)
    assert not watcher.wait_until_loaded("champion", timeout=0.3, retry_every=0.1)
    assert watcher.get("champion") is None and watcher.status()["last_error"]
    registry.down = False
    assert watcher.wait_until_loaded("champion", timeout=5, retry_every=0.1)


def test_jitter_stays_within_bounds() -> None:
    watcher = AliasWatcher(["champion"], dict, lambda v: None, interval=10,
                           jitter=0.2, rng=random.Random(1))
    delays = [watcher.next_delay() for _ in range(1000)]
    assert 8.0 <= min(delays) < 8.5 and 11.5 < max(delays) <= 12.0
