"""The registry functions on a real SQLite MLflow store (no Prefect): all-or-nothing registration,
promotion and lineage."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from level2_devops.models import build_model
from level3_training.registry import (
    MODEL_NAME,
    RegistrationError,
    alias_version,
    client_for,
    lineage,
    list_versions,
    promote,
    register_version,
)
from level3_training.tracking import configure_tracking, log_pipeline_model, start_run
from taxi_common.errors import BadInputError
from taxi_common.settings import Settings


@pytest.fixture
def logged_model(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str, str]:
    """(client, logged model ID, run id): a tiny linear pipeline logged to a fresh SQLite store."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    experiment_id = configure_tracking(settings)
    client = client_for(settings.tracking_uri)
    x = pd.DataFrame({"PULocationID": [1, 2, 3, 4] * 10, "DOLocationID": [5, 6, 7, 8] * 10,
                      "trip_distance": np.linspace(0.5, 9, 40)})
    pipeline = build_model("linear").fit(x, 3 * x["trip_distance"].to_numpy() + 2)
    run_id = start_run(client, experiment_id, "tiny", tags={"data.train_months": "2021-01"})
    model_id = log_pipeline_model(client, run_id, pipeline, x.head(3)).model_id
    return client, model_id, run_id


def test_experiment_has_an_artifact_location_under_workbook_home(settings: Settings) -> None:
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
