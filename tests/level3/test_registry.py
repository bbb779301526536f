"""The registry functions on a real SQLite MLflow store (no Prefect): all-or-nothing registration,
promotion with audit tags, rollback, pinned loading, evaluation on one holdout, lineage.

(What an outage of a tracking server does is in ``test_registry_server.py``.)
"""

from __future__ import annotations

import getpass
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from level2_devops.models import build_model
from level2_devops.training import data_fingerprint, fit_model
from level3_training.evaluation import evaluate_version, evaluate_versions, holdout
from level3_training.registry import (
    ACTION_TAG,
    ACTOR_TAG,
    CHALLENGER,
    CHAMPION,
    MODEL_NAME,
    NO_REASON,
    PREVIOUS,
    PROMOTED_AT_TAG,
    REASON_TAG,
    REPLACED_TAG,
    ROLLED_BACK_BY_TAG,
    ROLLED_BACK_REASON_TAG,
    RegistrationError,
    RollbackError,
    alias_version,
    aliases,
    client_for,
    default_actor,
    lineage,
    list_versions,
    load_version,
    promote,
    register_version,
    rollback,
)
from level3_training.tracking import (
    configure_tracking,
    log_pipeline_model,
    model_input_example,
    start_run,
    tracking_uri_scope,
)
from taxi_common.errors import BadInputError
from taxi_common.metrics import rmse
from taxi_common.prepare import FEATURE_COLUMNS, TARGET
from taxi_common.settings import Settings

HOLDOUT = {"month": "2021-02", "n_rows": 2000}


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow SQLite database, made once: creating one costs about 7 s here,
    a copy 0.1 s."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        client_for(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(settings: Settings, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """``settings`` whose WORKBOOK_HOME holds a fresh copy of the empty store."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    settings.workbook_home.mkdir(parents=True)
    shutil.copy(empty_store, settings.workbook_home / "mlflow.db")
    return settings


@pytest.fixture
def logged_model(store: Settings) -> tuple[Any, str, str]:
    """(client, logged model ID, run id): a tiny linear pipeline logged to a fresh SQLite store."""
    settings = store
    experiment_id = configure_tracking(settings)
    client = client_for(settings.tracking_uri)
    x = pd.DataFrame({"PULocationID": [1, 2, 3, 4] * 10, "DOLocationID": [5, 6, 7, 8] * 10,
                      "trip_distance": np.linspace(0.5, 9, 40)})
    pipeline = build_model("linear").fit(x, 3 * x["trip_distance"].to_numpy() + 2)
    run_id = start_run(client, experiment_id, "tiny", tags={"data.train_months": "2021-01"})
    model_id = log_pipeline_model(client, run_id, pipeline, x.head(3)).model_id
    return client, model_id, run_id


def test_experiment_has_an_artifact_location_under_workbook_home(store: Settings) -> None:
    settings = store
    configure_tracking(settings)
    experiment = client_for(settings.tracking_uri).get_experiment_by_name("taxi-duration")
    assert experiment.artifact_location.startswith(settings.workbook_home.as_uri())


def test_failed_registration_deletes_the_version(logged_model: tuple[Any, str, str]) -> None:
    client, uri, run_id = logged_model
    # "v1" is not a legal alias (it looks like a version): the failure comes after the version
    # exists, so this exercises the clean-up for real.
    with pytest.raises(RegistrationError, match="deleted again"):
        register_version(client, uri, run_id, description="d", tags={"k": "v"}, alias="v1")
    assert list_versions(client) == []


def test_register_promote_and_lineage(logged_model: tuple[Any, str, str]) -> None:
    client, uri, run_id = logged_model
    first = register_version(client, uri, run_id, description="first", tags={"val_rmse": "5.5"})
    second = register_version(client, uri, run_id, description="second", tags={})
    assert (str(first.version), str(second.version)) == ("1", "2")
    assert alias_version(client, "challenger") == "2"

    assert promote(client, "1") == {"champion": "1", "previous": None}
    assert promote(client, "2") == {"champion": "2", "previous": "1"}
    assert alias_version(client, "champion") == "2"
    assert alias_version(client, "previous") == "1"
    assert alias_version(client, "challenger") is None  # the challenger became champion

    info = lineage(client, "1")
    assert info.run_id == run_id and info.tags["data.train_months"] == "2021-01"
    assert info.aliases == ["previous"] and info.description == "first"
    rows = list_versions(client)
    assert [r["version"] for r in rows] == ["2", "1"] and rows[1]["val_rmse"] == 5.5


def test_promote_an_unknown_version_is_a_clear_error(logged_model: tuple[Any, str, str]) -> None:
    client, _, _ = logged_model
    with pytest.raises(BadInputError, match=f"{MODEL_NAME} has no version 9"):
        promote(client, "9")
    with pytest.raises(BadInputError, match="not a number"):
        promote(client, "latest")


# --- promotion audit and rollback ---------------------------------------------------------------

def _versions(logged_model: tuple[Any, str, str], count: int) -> Any:
    """``count`` registered versions of the logged model; the client."""
    client, uri, run_id = logged_model
    for _ in range(count):
        register_version(client, uri, run_id, description="d", tags={})
    return client


def _recent(stamp: str) -> bool:
    """True for a UTC ISO 8601 time stamp of the last minute."""
    when = datetime.fromisoformat(stamp)
    return when.utcoffset() == timedelta(0) and \
        timedelta(0) <= datetime.now(UTC) - when < timedelta(minutes=1)


def test_promote_writes_audit_tags_that_lineage_shows(
        logged_model: tuple[Any, str, str]) -> None:
    client = _versions(logged_model, 2)
    promote(client, "1")
    promote(client, "2", reason="lower RMSE on 2021-03", actor="alice")

    first = client.get_model_version(MODEL_NAME, "1").tags
    assert first[ACTION_TAG] == "promote" and first[REPLACED_TAG] == "none"
    assert first[REASON_TAG] == NO_REASON and first[ACTOR_TAG] == default_actor()
    second = client.get_model_version(MODEL_NAME, "2").tags
    assert (second[ACTION_TAG], second[REASON_TAG], second[ACTOR_TAG], second[REPLACED_TAG]) == \
        ("promote", "lower RMSE on 2021-03", "alice", "1")
    assert _recent(second[PROMOTED_AT_TAG])
    lines = lineage(client, "2").lines()
    assert "promotion.reason: lower RMSE on 2021-03" in lines
    assert "promotion.actor: alice" in lines and "promotion.replaced: 1" in lines

    stamp = second[PROMOTED_AT_TAG]
    assert promote(client, "2", reason="again") == {CHAMPION: "2", PREVIOUS: "1"}  # no-op
    assert client.get_model_version(MODEL_NAME, "2").tags[PROMOTED_AT_TAG] == stamp


def test_default_actor_is_the_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_actor() == getpass.getuser()
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("USER", "carol")
    assert default_actor() == "carol"


def test_rollback_restores_previous_clears_it_and_refuses_a_second(
        logged_model: tuple[Any, str, str]) -> None:
    client = _versions(logged_model, 3)
    promote(client, "1")
    promote(client, "2", reason="better")
    assert aliases(client) == {CHAMPION: "2", PREVIOUS: "1", CHALLENGER: "3"}

    moved = rollback(client, reason="p99 latency doubled", actor="oncall")
    assert moved == {CHAMPION: "1", PREVIOUS: None, "rolled_back": "2"}
    assert aliases(client) == {CHAMPION: "1", CHALLENGER: "3"}
    restored = client.get_model_version(MODEL_NAME, "1").tags
    assert (restored[ACTION_TAG], restored[REPLACED_TAG], restored[REASON_TAG],
            restored[ACTOR_TAG]) == ("rollback", "2", "p99 latency doubled", "oncall")
    assert _recent(restored[PROMOTED_AT_TAG])
    removed = client.get_model_version(MODEL_NAME, "2").tags
    assert (removed[ROLLED_BACK_REASON_TAG], removed[ROLLED_BACK_BY_TAG]) == \
        ("p99 latency doubled", "oncall")
    assert "promotion.rolled_back_reason: p99 latency doubled" in lineage(client, "2").lines()

    with pytest.raises(RollbackError, match="one rollback undoes one promotion") as error:
        rollback(client, reason="again")  # no ping-pong back to version 2
    assert "\n" not in str(error.value) and "level3 promote VERSION" in str(error.value)
    assert aliases(client) == {CHAMPION: "1", CHALLENGER: "3"}

    assert promote(client, "3") == {CHAMPION: "3", PREVIOUS: "1"}  # a promotion re-arms it
    assert rollback(client)["champion"] == "1"


def test_rollback_without_a_previous_version_is_a_clear_error(
        logged_model: tuple[Any, str, str]) -> None:
    client = _versions(logged_model, 1)
    with pytest.raises(RollbackError, match="no @champion and no @previous"):
        rollback(client)
    promote(client, "1")
    with pytest.raises(RollbackError, match="version 1 was the first champion"):
        rollback(client)
    assert aliases(client) == {CHAMPION: "1"}


def test_missing_aliases_and_models_read_as_none(logged_model: tuple[Any, str, str]) -> None:
    client = _versions(logged_model, 1)  # SQLite answers INVALID_PARAMETER_VALUE for the alias
    assert alias_version(client, CHAMPION) is None
    assert alias_version(client, CHAMPION, name="no-such-model") is None  # RESOURCE_DOES_NOT_EXIST
    assert aliases(client, "no-such-model") == {}
    assert list_versions(client, "no-such-model") == []


# --- pinned loading and evaluation on one holdout ------------------------------------------------

@pytest.fixture
def two_models(store: Settings) -> tuple[Any, dict[str, Any]]:
    """(client, {"1": linear, "2": random forest}) trained on synthetic 2021-01 and registered;
    version 1 is champion, version 2 challenger."""
    settings = store
    experiment_id = configure_tracking(settings)
    client = client_for(settings.tracking_uri)
    train = holdout("2021-01", settings, n_rows=2000)
    fitted = {"1": fit_model("linear", train),
              "2": fit_model("random_forest", train, {"n_estimators": 5, "max_depth": 4})}
    for version, pipeline in fitted.items():
        run_id = start_run(client, experiment_id, f"model-{version}")
        model_id = log_pipeline_model(client, run_id, pipeline,
                                      model_input_example(train)).model_id
        register_version(client, model_id, run_id, description="d", tags={})
    promote(client, "1")
    return client, fitted


def _predictions(pipeline: Any, rows: pd.DataFrame) -> np.ndarray:
    return np.asarray(pipeline.predict(rows[list(FEATURE_COLUMNS)]))


def test_load_version_pins_the_version_through_the_client_alone(
        two_models: tuple[Any, dict[str, Any]], store: Settings, tmp_path: Path) -> None:
    import mlflow

    client, fitted = two_models
    rows = holdout(**HOLDOUT, settings=store)
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"  # MLflow's global URI: another store
    with tracking_uri_scope(elsewhere):
        for asked, version in (("champion", "1"), ("@challenger", "2"), ("2", "2")):
            got, pipeline = load_version(client, asked)
            assert got == version
            np.testing.assert_allclose(_predictions(pipeline, rows),
                                       _predictions(fitted[version], rows))
        assert mlflow.get_tracking_uri() == elsewhere  # neither read nor changed
    with pytest.raises(BadInputError, match="no @previous alias"):
        load_version(client, "previous")
    with pytest.raises(BadInputError, match="has no version 7"):
        load_version(client, "7")
    with pytest.raises(BadInputError, match="neither a version number nor an alias"):
        load_version(client, "the best")


def test_two_versions_on_the_same_month_see_identical_rows(
        two_models: tuple[Any, dict[str, Any]], store: Settings) -> None:
    client, fitted = two_models
    cache = store.workbook_home / "cache" / "prepared"
    before = set(cache.glob("*.parquet"))
    champion = evaluate_version(client, "champion", HOLDOUT["month"], store,
                                n_rows=HOLDOUT["n_rows"])  # prepares and caches the month
    assert len(set(cache.glob("*.parquet")) - before) == 1
    challenger = evaluate_version(client, "challenger", HOLDOUT["month"], store,
                                  n_rows=HOLDOUT["n_rows"])  # reads the cached month

    rows = holdout(**HOLDOUT, settings=store)
    assert (champion.version, challenger.version) == ("1", "2")
    assert champion.n == challenger.n == len(rows) > 1000
    assert champion.fingerprint == challenger.fingerprint == data_fingerprint(rows)
    for result in (champion, challenger):
        assert result.rmse == pytest.approx(
            rmse(rows[TARGET], _predictions(fitted[result.version], rows)), rel=1e-9)
    assert champion.rmse != challenger.rmse
    assert evaluate_versions(client, ["champion", "challenger"], HOLDOUT["month"], store,
                             n_rows=HOLDOUT["n_rows"]) == [champion, challenger]
    drifted = evaluate_version(client, "1", HOLDOUT["month"], store, n_rows=HOLDOUT["n_rows"],
                               scenario="congestion")
    assert drifted.fingerprint != champion.fingerprint  # other rows, another fingerprint


def test_evaluate_checks_its_arguments_before_loading(
        two_models: tuple[Any, dict[str, Any]], store: Settings) -> None:
    client, _ = two_models
    with pytest.raises(BadInputError, match="YYYY-MM"):
        evaluate_version(client, "champion", "2021-13", store)
    with pytest.raises(BadInputError, match="unknown data source"):
        evaluate_version(client, "champion", "2021-02", store, source="s3")


# --- the commands ------------------------------------------------------------------------------

def test_cli_promote_rollback_lineage_and_evaluate(
        two_models: tuple[Any, dict[str, Any]], store: Settings,
        run_cli: Callable[..., Any]) -> None:
    client, _ = two_models
    done = run_cli("level3", "promote", "2", "--reason", "forest wins", "--actor", "bob",
                   settings=store)
    assert done.returncode == 0, done.stderr
    assert "@champion -> version 2; @previous -> 1" in done.stdout

    done = run_cli("level3", "evaluate", "champion", "previous", "--month", "2021-02",
                   "--rows", "2000", settings=store)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "2021-02" in lines[0] and "trips" in lines[0]
    assert [line.split()[:2] for line in lines[2:]] == [["champion", "2"], ["previous", "1"]]

    done = run_cli("level3", "rollback", "--reason", "drift alarm", settings=store)
    assert done.returncode == 0, done.stderr
    assert "@champion -> version 1 (was 2)" in done.stdout
    assert aliases(client) == {CHAMPION: "1"}
    assert client.get_model_version(MODEL_NAME, "1").tags[REASON_TAG] == "drift alarm"

    done = run_cli("level3", "rollback", settings=store)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert "one rollback undoes one promotion" in done.stderr

    done = run_cli("level3", "lineage", "2", settings=store)
    assert done.returncode == 0, done.stderr
    assert "promotion.reason: forest wins" in done.stdout
    assert "promotion.actor: bob" in done.stdout
    assert "promotion.rolled_back_reason: drift alarm" in done.stdout
