"""The training flow end to end on small synthetic data, embedded MLflow (SQLite) and the session's
Prefect server: runs, nested runs, lineage tags, datasets, the logged model, the model card, the
registered challenger, promote, lineage, retries, and the flow as a worker would run it.

The module's ``trained`` home is only read (a re-run there registers nothing); a test that
changes a registry trains in a home of its own.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest

from level2_devops.training import data_fingerprint, evaluate, load_prepared_month
from level3_training.pipeline import TrainConfig
from level3_training.registry import MODEL_NAME, alias_version, client_for
from level3_training.tracking import tracking_uri_scope
from taxi_common.data import MonthRequest
from taxi_common.settings import Settings

pytestmark = pytest.mark.slow


def _runs(settings: Settings) -> Any:
    import mlflow

    with tracking_uri_scope(settings.tracking_uri):
        return mlflow.search_runs(experiment_names=["taxi-duration"], output_format="pandas")


def _best(summary: dict[str, Any]) -> dict[str, Any]:
    return min(summary["candidates"], key=lambda c: c["val_rmse"])


def test_flow_logs_a_parent_run_a_nested_run_per_candidate_and_per_trial(
        trained: tuple[Settings, dict[str, Any]]) -> None:
    settings, summary = trained
    runs = _runs(settings)
    parent_id = summary["parent_run_id"]
    parent = runs[runs["run_id"] == parent_id]
    assert len(parent) == 1 and parent.iloc[0]["status"] == "FINISHED"
    assert parent.iloc[0]["tags.level3.kind"] == "pipeline"

    candidates = runs[runs["tags.mlflow.parentRunId"] == parent_id]
    assert sorted(candidates["tags.model.name"]) == ["linear", "random_forest", "ridge"]
    assert set(candidates["tags.level3.kind"]) == {"candidate"}
    trials = runs[runs["tags.mlflow.parentRunId"].isin(candidates["run_id"])]
    assert set(trials["tags.level3.kind"]) == {"trial"}
    for _, cand in candidates.iterrows():
        mine = trials[trials["tags.mlflow.parentRunId"] == cand["run_id"]]
        expected = 1 if cand["tags.model.name"] == "linear" else 2
        assert len(mine) == expected, cand["tags.model.name"]
        assert mine["metrics.val_rmse"].min() == pytest.approx(cand["metrics.val_rmse"])
    mine = runs[runs["run_id"].isin([*candidates["run_id"], *trials["run_id"]])]
    for column in ("metrics.train_rmse", "metrics.train_mae", "metrics.val_rmse",
                   "metrics.val_mae"):
        assert mine[column].notna().all(), column
    assert trials["params.alpha"].notna().sum() == 2  # ridge's two trials


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
    assert parent["tags.prefect.flow_run_id"] == summary["flow_run_id"]
    assert parent["metrics.best_val_rmse"] == pytest.approx(summary["best_val_rmse"])


def test_best_candidate_is_registered_as_challenger(
        trained: tuple[Settings, dict[str, Any]]) -> None:
    import mlflow

    settings, summary = trained
    client = client_for(settings.tracking_uri)
    version_number = summary["version"]
    assert version_number is not None
    assert alias_version(client, "challenger") == version_number
    version = client.get_model_version(MODEL_NAME, version_number)
    best = _best(summary)
    assert version.run_id == best["run_id"]
    assert "2021-01" in version.description and "2021-02" in version.description
    assert f"{best['val_rmse']:.4f}" in version.description

    uri = f"models:/{MODEL_NAME}/{version_number}"
    with tracking_uri_scope(settings.tracking_uri):
        model = mlflow.sklearn.load_model(uri)
        info = mlflow.models.get_model_info(uri)
    val = load_prepared_month("2021-02", settings=settings, n_rows=3000)
    assert evaluate(model, val)["rmse"] == pytest.approx(best["val_rmse"])
    assert info.model_id == best["model_id"] == summary["best_model_id"]
    assert info.signature.inputs.input_names() == ["PULocationID", "DOLocationID",
                                                  "trip_distance"]


def _inputs_by_context(client: Any, run_id: str) -> dict[str, Any]:
    """The datasets a run logged as inputs, by their ``mlflow.data.context`` tag."""
    return {tag.value: item.dataset for item in client.get_run(run_id).inputs.dataset_inputs
            for tag in item.tags if tag.key == "mlflow.data.context"}


def test_runs_log_their_datasets_and_the_model_its_params_and_linked_metrics(
        trained: tuple[Settings, dict[str, Any]]) -> None:
    from level3_training.datasets import TaxiMonthsSource

    settings, summary = trained
    client = client_for(settings.tracking_uri)
    data, best = summary["data"], _best(summary)
    for run_id in (summary["parent_run_id"], best["run_id"]):
        inputs = _inputs_by_context(client, run_id)
        assert inputs["training"].digest == data["train_fingerprint"]
        assert inputs["validation"].digest == data["val_fingerprint"]
    training = _inputs_by_context(client, best["run_id"])["training"]
    assert json.loads(training.source)["uri"] == \
        "taxi-months:synthetic/green/2021-01?rows=3000&seed=0&scenario=baseline"
    rebuilt = TaxiMonthsSource.from_json(training.source).load(settings)
    assert data_fingerprint(rebuilt) == data["train_fingerprint"]

    model = client.get_logged_model(best["model_id"])
    assert model.source_run_id == best["run_id"]
    assert model.params == {"model": best["name"],
                            **{k: str(v) for k, v in best["params"].items()}}
    metrics = {m.key: m for m in model.metrics}
    assert metrics["val_rmse"].value == pytest.approx(best["val_rmse"])
    assert metrics["val_rmse"].dataset_digest == data["val_fingerprint"]
    assert metrics["train_rmse"].dataset_digest == data["train_fingerprint"]
    assert metrics["train_rmse"].model_id == model.model_id


def test_the_version_has_a_model_card_as_description_and_artifacts(
        trained: tuple[Settings, dict[str, Any]], tmp_path: Path) -> None:
    from mlflow.artifacts import download_artifacts

    settings, summary = trained
    client = client_for(settings.tracking_uri)
    best = _best(summary)
    version = client.get_model_version(MODEL_NAME, summary["version"])
    card = version.description
    for heading in ("## Intended use", "## Training data and lineage", "## Metrics (minutes)",
                    "## Limitations", "## Owner"):
        assert heading in card, heading
    assert summary["data"]["train_fingerprint"] in card and best["run_id"] in card
    model = client.get_logged_model(best["model_id"])
    assert version.tags["model.id"] == model.model_id
    assert version.source == model.artifact_location
    in_run = download_artifacts(run_id=best["run_id"], artifact_path="model_card.md",
                                dst_path=str(tmp_path / "run"), tracking_uri=settings.tracking_uri)
    beside_model = download_artifacts(artifact_uri=f"{model.artifact_location}/model_card.md",
                                      dst_path=str(tmp_path / "model"),
                                      tracking_uri=settings.tracking_uri)
    assert Path(in_run).read_text() == Path(beside_model).read_text() == card


def test_the_flow_run_records_business_parameters_only(
        trained: tuple[Settings, dict[str, Any]]) -> None:
    from prefect.client.orchestration import get_client

    settings, summary = trained
    with get_client(sync_client=True) as prefect:
        run = prefect.read_flow_run(summary["flow_run_id"])
    assert list(run.parameters) == ["config"]
    assert set(run.parameters["config"]) == {f.name for f in fields(TrainConfig)}
    recorded = json.dumps(run.parameters)
    assert str(settings.workbook_home) not in recorded and "sqlite" not in recorded


def test_train_config_survives_a_deployment_parameter_round_trip(prefect_api: str) -> None:
    from level3_training.flow import training_flow

    config = TrainConfig(("2021-01", "2021-02"), "2021-03", models=("ridge", "hist_gb"),
                         trials=4, n_rows=100, scenario="hotspot", register=False)
    as_json = json.loads(json.dumps(training_flow.serialize_parameters({"config": config})))
    assert as_json["config"]["train_months"] == ["2021-01", "2021-02"]
    assert training_flow.validate_parameters(as_json) == {"config": config}


def test_the_flow_reads_its_settings_from_the_environment_as_a_worker_would(
        prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        decoy_tracking_uri: Path) -> None:
    import mlflow

    from level3_training.flow import training_flow

    home = tmp_path / "worker-home"
    monkeypatch.setenv("WORKBOOK_HOME", str(home))
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
        monkeypatch.delenv(name, raising=False)  # a worker's bare environment
    summary = training_flow(TrainConfig(("2021-01",), "2021-02", models=("linear",), trials=1,
                                        n_rows=1500))
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"  # level 3's defaults applied
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert summary["workbook_home"] == str(home.resolve())
    client = client_for(Settings(workbook_home=home).tracking_uri)
    assert client.get_run(summary["parent_run_id"]).info.status == "FINISHED"
    assert alias_version(client, "challenger") == summary["version"] == "1"
    # MLflow's global tracking URI was neither used nor changed
    assert mlflow.get_tracking_uri() == f"sqlite:///{decoy_tracking_uri}"
    assert not decoy_tracking_uri.exists() and "MLFLOW_TRACKING_URI" not in os.environ


def _deployment_exists(name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as prefect:
        try:
            prefect.read_deployment_by_name(name)
        except ObjectNotFound:
            return False
    return True


def test_a_deployment_runs_with_the_settings_of_the_process_that_serves_it(
        prefect_api: str, tmp_path: Path) -> None:
    """The caller names months and models; the serving process's WORKBOOK_HOME is where it runs."""
    from dataclasses import asdict

    from prefect.deployments import run_deployment

    from taxi_common.local_servers import stop_process_group, wait_until_healthy

    name = f"taxi-duration-training/serve-{os.getpid()}"
    worker_home = tmp_path / "worker-home"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MLFLOW_") and k != "WORKBOOK_HOME"}
    env.update({"WORKBOOK_HOME": str(worker_home), "PREFECT_API_URL": prefect_api,
                "PREFECT_HOME": str(tmp_path / "worker-prefect"),
                "PREFECT_RUNNER_POLL_FREQUENCY": "1"})
    serve = ("from level3_training.flow import training_flow; "
             f"training_flow.serve(name={name.split('/')[1]!r}, pause_on_shutdown=False)")
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-c", serve], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(process, lambda: _deployment_exists(name), what="flow.serve",
                           timeout=120, log_path=log_path)
        config = TrainConfig(("2021-01",), "2021-02", models=("linear",), trials=1, n_rows=1500)
        run = run_deployment(name, parameters={"config": asdict(config)}, timeout=300)
    finally:
        stop_process_group(process.pid)  # before the session's server stops
    assert run.state is not None and run.state.is_completed(), log_path.read_text()[-2000:]
    assert run.parameters["config"]["train_months"] == ["2021-01"]
    client = client_for(Settings(workbook_home=worker_home).tracking_uri)
    experiment = client.get_experiment_by_name("taxi-duration")
    [parent] = client.search_runs([experiment.experiment_id],
                                  f"tags.`prefect.flow_run_id` = '{run.id}'")
    assert parent.info.status == "FINISHED" and parent.data.tags["data.train_months"] == "2021-01"
    assert alias_version(client, "challenger") == "1"


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
        settings: Settings, train_small: Callable[..., dict[str, Any]],
        run_cli: Callable[..., Any]) -> None:
    first = train_small(settings, models=("linear",), trials=1, n_rows=1500)
    second = train_small(settings, models=("ridge",), trials=1, n_rows=1500)
    assert (first["version"], second["version"]) == ("1", "2")  # a registry of its own
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
    done = run_cli("level3", "lineage", summary["version"], settings=settings)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    data = summary["data"]
    assert "data.train_months: 2021-01" in out and "data.val_month: 2021-02" in out
    assert f"data.train_fingerprint: {data['train_fingerprint']}" in out
    assert f"data.train_rows: {data['train_rows']}" in out
    assert "data.source: synthetic" in out and "code.version: " in out
    assert f"run id: {_best(summary)['run_id']}" in out
    assert "metric val_rmse: " in out


# --- retries, for real: a TLC mirror on 127.0.0.1 that drops the first connection ---------------

JAN = "green_tripdata_2021-01.parquet"


@dataclass
class FlakyMirror:
    """A TLC mirror whose first answer for each file is a dropped connection."""

    base_url: str
    files: dict[str, bytes]
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def flaky_mirror() -> Iterator[FlakyMirror]:
    """The mirror on a free port of 127.0.0.1 with a synthetic (TLC-schema) January; stopped
    after the test. Other files answer 404, as the TLC does for an unpublished month."""
    from taxi_common.synthetic import generate_month

    buffer = io.BytesIO()
    generate_month("2021-01", n_rows=2000).to_parquet(buffer, index=False)
    mirror = FlakyMirror("", {JAN: buffer.getvalue()})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            name = self.path.lstrip("/")
            mirror.requests.append(name)
            if name not in mirror.files:
                self.send_error(404)
            elif mirror.requests.count(name) == 1:
                self.close_connection = True  # hang up without an answer
            else:
                body = mirror.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    mirror.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield mirror
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_prefect_retries_a_dropped_connection_but_not_an_unpublished_month(
        prefect_api: str, flaky_mirror: FlakyMirror, tmp_path: Path) -> None:
    from prefect import flow

    from level3_training.flow import load_month
    from taxi_common.errors import DataUnavailableError, TransientDataError

    @flow(name="load-one-month")
    def load_one(request: MonthRequest, settings: Settings) -> int:
        df, _ = load_month(request, settings)
        return len(df)

    settings = Settings(workbook_home=tmp_path / "workbook", tlc_base_url=flaky_mirror.base_url)
    rows = load_one(MonthRequest("2021-01", source="tlc"), settings)
    assert rows > 1000
    assert flaky_mirror.requests == [JAN, JAN]  # attempt 1 hung up on, attempt 2 served

    state = load_one(MonthRequest("2031-01", source="tlc"), settings, return_state=True)
    assert state.is_failed()
    with pytest.raises(DataUnavailableError, match="2031-01 is not published") as info:
        state.result()
    assert not isinstance(info.value, TransientDataError)
    assert flaky_mirror.requests.count("green_tripdata_2031-01.parquet") == 1  # no retry


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
