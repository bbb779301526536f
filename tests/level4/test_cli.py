"""The level-4 data-plane commands (typer, in process), and the dashboard as a real process."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline, make_pipeline
from typer.testing import CliRunner

from level4_deployment import store, traffic
from level4_deployment.cli import app, default_reference_path
from taxi_common.features import TripFeaturizer
from taxi_common.local_servers import free_port, http_ok, stop_process_group, wait_until_healthy
from taxi_common.scenarios import Scenario
from taxi_common.settings import Settings

from .test_traffic import _Service, service_url  # noqa: F401 - the local service fixture

FEATURES = ["PULocationID", "DOLocationID", "trip_distance"]
ROWS = "3000"


@pytest.fixture(scope="module")
def model() -> Pipeline:
    january = traffic.month_traffic("2021-01", settings=Settings(workbook_home=Path("/nowhere")),
                                    rows=20_000)
    return make_pipeline(TripFeaturizer(), LinearRegression()).fit(january[FEATURES],
                                                                   january["duration"])


@pytest.fixture
def home(tmp_path: Path) -> Settings:
    return Settings(workbook_home=tmp_path / "workbook")


@pytest.fixture
def cli(home: Settings) -> Any:
    """``cli(*args)``: the command in process with WORKBOOK_HOME set; the typer result."""
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
        return runner.invoke(app, list(args), env={"WORKBOOK_HOME": str(home.workbook_home),
                                                   "DATABASE_URL": "", **(env or {})})
    return invoke


def model_file(pipeline: Pipeline, folder: Path) -> Path:
    """A level-2 model file (the seam the registry's champion will replace)."""
    from level2_devops.model_store import save_model

    return save_model(pipeline, {"model": "linear"}, folder)


def serve_days(settings: Settings, pipeline: Pipeline, days: list[int], *,
               challenger: bool = False) -> None:
    trips = traffic.trips_for_days("2021-03", days, settings=settings,
                                   scenario=Scenario("congestion", start_day=10))
    engine = store.engine_for(settings)
    store.create_tables(engine)
    rows = traffic.served_rows(trips, pipeline, "v1")
    if challenger:
        for row in rows[1::2]:
            row.update(variant="challenger", model_version="v2", prediction=row["prediction"] + 2)
    store.write_predictions(engine, rows)
    store.record_actuals(engine, traffic.actual_rows(trips))


def test_log_on_an_empty_database(cli: Any) -> None:
    result = cli("log")
    assert result.exit_code == 0 and "predictions logged: 0" in result.output
    assert json.loads(cli("log", "--json").output) == {"total": 0, "by_variant": {},
                                                       "by_version": {}}


def test_actuals_records_the_ended_trips_once(cli: Any) -> None:
    first = cli("actuals", "--month", "2021-03", "--through-day", "2", "--rows", ROWS)
    assert first.exit_code == 0, first.output
    assert "through day 2" in first.output and " 0 new" not in first.output
    again = cli("actuals", "--month", "2021-03", "--through-day", "2", "--rows", ROWS)
    assert again.output.rstrip().endswith("0 new actuals recorded")


def test_reference_then_monitor_without_flow(cli: Any, home: Settings, model: Pipeline) -> None:
    path = model_file(model, home.workbook_home / "models")
    written = cli("reference", "--model-file", str(path), "--month", "2021-02", "--rows", "8000")
    assert written.exit_code == 0, written.output
    assert default_reference_path(home).is_file() and "model v1" in written.output
    serve_days(home, model, [9, 10])
    result = cli("monitor", "--from", "2021-03-09", "--to", "2021-03-10", "--no-flow")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].startswith("2021-03-09") and lines[1].endswith("-")
    assert "mae_ratio" in lines[2] and "ALERT 2021-03-10: mae_ratio" in result.output
    as_json = json.loads(cli("monitor", "--day", "2021-03-10", "--no-flow", "--json").output)
    assert as_json[0]["day"] == "2021-03-10" and as_json[0]["new_alerts"] == 0


def test_monitor_arguments_and_files_are_checked_first(cli: Any, tmp_path: Path) -> None:
    both = cli("monitor", "--day", "2021-03-10", "--from", "2021-03-09", "--no-flow")
    assert both.exit_code == 2 and "error: monitor needs --day DAY, or --from" in both.output
    half = cli("monitor", "--from", "2021-03-09", "--no-flow")
    assert half.exit_code == 2 and "monitor needs" in half.output
    missing = cli("monitor", "--day", "2021-03-10", "--no-flow")
    assert missing.exit_code == 2 and "reference file" in missing.output
    assert "does not exist" in missing.output and "Traceback" not in missing.output


def test_monitor_with_a_bad_config_names_the_key(cli: Any, home: Settings, model: Pipeline,
                                                 tmp_path: Path) -> None:
    from level4_deployment.reference import write_reference

    write_reference(model, "2021-02", settings=home, rows=3000,
                    path=default_reference_path(home))
    config = tmp_path / "bad.toml"
    config.write_text("[thresholds]\nmae_ratio = 0\n")
    result = cli("monitor", "--day", "2021-03-10", "--no-flow", "--config", str(config))
    assert result.exit_code == 2
    assert "[thresholds] mae_ratio: expected `float` > 0.0, got 0" in result.output


def test_ab_report_text_and_json(cli: Any, home: Settings, model: Pipeline) -> None:
    serve_days(home, model, [3], challenger=True)  # the challenger is 2 minutes off
    early = cli("ab-report")
    assert early.exit_code == 0 and "verdict: not enough data" in early.output
    report = json.loads(cli("ab-report", "--min-samples", "500", "--json").output)
    assert report["verdict"] == "challenger worse"
    assert report["variants"]["challenger"]["versions"] == {"v2": report["variants"][
        "challenger"]["n"]}
    assert report["design"]["min_samples_per_variant"] == 500


def test_replay_against_the_local_service(cli: Any, service_url: str) -> None:  # noqa: F811
    result = cli("replay", "--month", "2021-03", "--days", "2", "--rows", ROWS, "--rate", "2000",
                 "--url", service_url)
    assert result.exit_code == 0, result.output
    sent = len(_Service.bodies)
    assert sent > 50 and f"sent {sent}: ok" in result.output
    ids = {b["ride_id"] for b in _Service.bodies}
    actual_ids = {r["ride_id"] for r in traffic.actuals_through(
        "2021-03", 3, settings=Settings(workbook_home=Path("/nowhere")), rows=int(ROWS))}
    assert ids <= actual_ids  # the same data options give the same ride ids


def test_replay_to_a_stopped_service_is_one_line(cli: Any) -> None:
    result = cli("replay", "--month", "2021-03", "--days", "2", "--rows", ROWS,
                 "--url", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 2
    assert "error: the prediction service at http://127.0.0.1:" in result.output


def test_a_bad_database_url_is_one_line(cli: Any) -> None:
    result = cli("log", env={"DATABASE_URL": "mysql://u@127.0.0.1/db"})
    assert result.exit_code == 2 and "error: DATABASE_URL uses 'mysql'" in result.output


@pytest.mark.postgres
def test_log_against_postgresql_by_database_url(cli: Any, pg_schema: str) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/test"
    result = cli("log", "--json", env={"DATABASE_URL": url,
                                       "PGOPTIONS": f"-c search_path={pg_schema}"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total"] == 0


# --- the dashboard: `evidently ui` on a free port, read through its HTTP API -----------------

@pytest.fixture
def dashboard(home: Settings, model: Pipeline) -> Iterator[str]:
    """Two monitored days in the workspace, then the dashboard command on a free port."""
    from level4_deployment.monitoring import monitor_days
    from level4_deployment.monitoring_config import load_config
    from level4_deployment.reference import load_reference, write_reference

    serve_days(home, model, [9, 10])
    ref = load_reference(write_reference(model, "2021-02", settings=home, rows=3000,
                                         path=default_reference_path(home)))
    monitor_days([dt.date(2021, 3, 9), dt.date(2021, 3, 10)], engine=store.engine_for(home),
                 reference=ref, config=load_config(), settings=home, html=False)
    port = free_port()
    log = home.workbook_home / "dashboard.log"
    env = {**os.environ, "WORKBOOK_HOME": str(home.workbook_home)}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "level4_deployment.cli", "dashboard",
                                    "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, lambda: http_ok(f"{url}/api/version", timeout=1),
                           what="evidently ui", timeout=120, log_path=log)
        yield url
    finally:
        stop_process_group(process.pid)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - local URL
        return json.loads(response.read())


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local URL
        return json.loads(response.read())


@pytest.mark.slow
def test_dashboard_serves_the_project_and_every_panel_has_data(dashboard: str) -> None:
    from level4_deployment.dashboard import PROJECT_NAME

    projects = [p for p in _get(f"{dashboard}/api/projects") if p["name"] == PROJECT_NAME]
    assert len(projects) == 1
    project = projects[0]["id"]
    panels = _get(f"{dashboard}/api/v2/dashboards/{project}")["panels"]
    assert len(panels) == 6
    for panel in panels:
        body = {"series_filter": [{"metric": v["metric"], "metric_labels": v["metric_labels"],
                                   "tags": [], "metadata": {}} for v in panel["values"]]}
        series = _post(f"{dashboard}/api/v2/snapshots/{project}/data_series_batch", body)
        assert [s["timestamp"][:10] for s in series["sources"]] == ["2021-03-09", "2021-03-10"]
        assert series["series"], f"panel {panel['title']!r} shows nothing"
        assert all(len(s["values"]) == 2 for s in series["series"]), panel["title"]


@pytest.mark.slow
def test_monitor_runs_the_prefect_flow_by_default(home: Settings, model: Pipeline,
                                                  prefect_api: str) -> None:
    """The flow-level test: ``monitor`` in a real process (Prefect's console logging belongs to
    the process that starts it) on the session's Prefect server, one task run per day."""
    from level4_deployment.reference import write_reference

    write_reference(model, "2021-02", settings=home, rows=3000,
                    path=default_reference_path(home))
    serve_days(home, model, [9, 10])  # congestion from the 10th
    env = {**os.environ, "WORKBOOK_HOME": str(home.workbook_home), "PREFECT_API_URL": prefect_api}
    env.pop("DATABASE_URL", None)
    result = subprocess.run([sys.executable, "-m", "level4_deployment.cli", "monitor", "--from",
                             "2021-03-09", "--to", "2021-03-10", "--json"], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    days = json.loads(result.stdout)  # Prefect's run logs go to stderr
    assert [d["day"] for d in days] == ["2021-03-09", "2021-03-10"]
    assert not days[0]["alerts"] and days[1]["alerts"]
    assert all(Path(d["html"]).is_file() for d in days)
    assert result.stderr.count("monitor-day") >= 2  # a task run per day
    assert "Finished in state Completed" in result.stderr
    stored = store.read_metrics(store.engine_for(home), metrics=["mae_ratio"])
    assert stored["day"].tolist() == [dt.date(2021, 3, 9), dt.date(2021, 3, 10)]


def test_a_user_error_is_one_line_from_the_command(home: Settings) -> None:
    env = {**os.environ, "WORKBOOK_HOME": str(home.workbook_home)}
    result = subprocess.run([sys.executable, "-m", "level4_deployment.cli", "monitor", "--day",
                             "2021-13-01", "--no-flow"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: day '2021-13-01' is not of the form YYYY-MM-DD"]


def test_an_unreachable_database_is_one_line(cli: Any) -> None:
    result = cli("log", env={"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"})
    assert result.exit_code == 2
    assert "error: the level-4 database does not answer" in result.output
    assert "check DATABASE_URL" in result.output and "Traceback" not in result.output
