"""The training flow end to end on small synthetic data, embedded MLflow (SQLite) and the session's
Prefect server: runs, nested runs, lineage tags, the registered challenger, promote, lineage."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from level2_devops.training import data_fingerprint, evaluate, load_prepared_month
from level3_training.registry import MODEL_NAME, alias_version, client_for
from level3_training.tracking import tracking_uri_scope
from taxi_common.settings import Settings

pytestmark = pytest.mark.slow


def _runs(settings: Settings) -> Any:
    import mlflow

    with tracking_uri_scope(settings.tracking_uri):
        return mlflow.search_runs(experiment_names=["taxi-duration"], output_format="pandas")


def test_flow_logs_a_parent_run_a_nested_run_per_candidate_and_per_trial(
        trained: tuple[Settings, dict[str, Any]]) -> None:
    settings, summary = trained
    runs = _runs(settings)
    kind = runs["tags.level3.kind"]
    parents = runs[kind == "pipeline"]
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    parent_id = parents.iloc[0]["run_id"]
    assert parent_id == summary["parent_run_id"]

    candidates = runs[kind == "candidate"]
    assert sorted(candidates["tags.model.name"]) == ["linear", "random_forest", "ridge"]
    assert set(candidates["tags.mlflow.parentRunId"]) == {parent_id}
    trials = runs[kind == "trial"]
    for _, cand in candidates.iterrows():
        mine = trials[trials["tags.mlflow.parentRunId"] == cand["run_id"]]
        expected = 1 if cand["tags.model.name"] == "linear" else 2
        assert len(mine) == expected, cand["tags.model.name"]
        assert mine["metrics.val_rmse"].min() == pytest.approx(cand["metrics.val_rmse"])
    for column in ("metrics.train_rmse", "metrics.train_mae", "metrics.val_rmse",
                   "metrics.val_mae"):
        assert runs.loc[kind != "pipeline", column].notna().all(), column
    assert runs[kind == "trial"]["params.alpha"].notna().sum() == 2  # ridge's two trials


def test_runs_carry_the_data_lineage(trained: tuple[Settings, dict[str, Any]]) -> None:
    settings, summary = trained
    parent = _runs(settings).set_index("run_id").loc[summary["parent_run_id"]]
    train = load_prepared_month("2021-01", settings=settings, n_rows=3000)
    assert parent["tags.data.source"] == "synthetic"
    assert parent["tags.data.train_months"] == "2021-01"
    assert parent["tags.data.val_month"] == "2021-02"
    assert parent["tags.data.train_rows"] == str(len(train))
    assert parent["tags.data.train_fingerprint"] == data_fingerprint(train)
    assert parent["tags.code.version"]
    assert parent["metrics.best_val_rmse"] == pytest.approx(summary["best_val_rmse"])


def test_best_candidate_is_registered_as_challenger(
        trained: tuple[Settings, dict[str, Any]]) -> None:
    import mlflow

    settings, summary = trained
    client = client_for(settings.tracking_uri)
    assert summary["version"] == "1"
    assert alias_version(client, "challenger") == "1"
    version = client.get_model_version(MODEL_NAME, "1")
    best = min(summary["candidates"], key=lambda c: c["val_rmse"])
    assert version.run_id == best["run_id"]
    assert "2021-01" in version.description and "2021-02" in version.description
    assert f"{best['val_rmse']:.4f}" in version.description

    with tracking_uri_scope(settings.tracking_uri):
        model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}@challenger")
        info = mlflow.models.get_model_info(f"models:/{MODEL_NAME}@challenger")
    val = load_prepared_month("2021-02", settings=settings, n_rows=3000)
    assert evaluate(model, val)["rmse"] == pytest.approx(best["val_rmse"])
    assert info.signature.inputs.input_names() == ["PULocationID", "DOLocationID",
                                                  "trip_distance"]


def test_rerun_with_other_models_reads_prepared_data_from_the_cache(
        trained: tuple[Settings, dict[str, Any]],
        train_small: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    settings, first = trained
    assert not any(first["data"]["cache_hits"].values())
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    second = train_small(settings, models=("lasso",), trials=1, register=False)
    assert "MLFLOW_TRACKING_URI" not in os.environ  # MLflow's global URI did not leak out
    assert all(second["data"]["cache_hits"].values())
    assert second["data"]["train_fingerprint"] == first["data"]["train_fingerprint"]
    assert second["version"] is None


def test_cli_promote_moves_champion_and_keeps_previous(
        trained: tuple[Settings, dict[str, Any]], train_small: Callable[..., dict[str, Any]],
        run_cli: Callable[..., Any]) -> None:
    settings, _ = trained
    newer = train_small(settings, models=("ridge",), trials=1)
    assert newer["version"] == "2"
    client = client_for(settings.tracking_uri)

    done = run_cli("level3", "promote", "1", settings=settings)
    assert done.returncode == 0, done.stderr
    assert alias_version(client, "champion") == "1" and alias_version(client, "previous") is None
    done = run_cli("level3", "promote", "2", settings=settings)
    assert done.returncode == 0, done.stderr
    assert "@champion -> version 2; @previous -> 1" in done.stdout
    assert alias_version(client, "champion") == "2" and alias_version(client, "previous") == "1"

    listed = run_cli("level3", "models", settings=settings)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(line.split()[:2] == ["2", "champion"] for line in lines), listed.stdout
    assert any(line.split()[:2] == ["1", "previous"] for line in lines), listed.stdout


def test_cli_lineage_prints_months_rows_and_fingerprint(
        trained: tuple[Settings, dict[str, Any]], run_cli: Callable[..., Any]) -> None:
    settings, summary = trained
    done = run_cli("level3", "lineage", "1", settings=settings)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    data = summary["data"]
    assert "data.train_months: 2021-01" in out and "data.val_month: 2021-02" in out
    assert f"data.train_fingerprint: {data['train_fingerprint']}" in out
    assert f"data.train_rows: {data['train_rows']}" in out
    assert "data.source: synthetic" in out and "code.version: " in out
    assert f"run id: {min(summary['candidates'], key=lambda c: c['val_rmse'])['run_id']}" in out
    assert "metric val_rmse: " in out


def test_loading_retries_transient_errors_but_not_user_errors(prefect_api: str) -> None:
    from prefect.states import Failed

    from level3_training.flow import _not_a_user_error, load_month
    from taxi_common.errors import DataUnavailableError

    assert load_month.retries == 2
    assert _not_a_user_error(None, None, Failed(data=ConnectionResetError("peer reset")))
    assert not _not_a_user_error(None, None, Failed(data=DataUnavailableError("2031-01")))


def test_several_training_months_are_combined(settings: Settings,
                                              train_small: Callable[..., dict[str, Any]]) -> None:
    summary = train_small(settings, train_months=("2021-01", "2021-02"), val_month="2021-03",
                          n_rows=1500, models=("linear",), trials=1, register=False)
    months = [load_prepared_month(m, settings=settings, n_rows=1500)
              for m in ("2021-01", "2021-02")]
    assert summary["data"]["train_rows"] == sum(len(m) for m in months)
    assert summary["data"]["train_months"] == ["2021-01", "2021-02"]
    parent = _runs(settings).set_index("run_id").loc[summary["parent_run_id"]]
    assert parent["tags.data.train_months"] == "2021-01,2021-02"
    assert parent["tags.data.val_month"] == "2021-03"
