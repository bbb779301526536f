"""``mlops-levels demo``: every level end to end on the same months, then a side-by-side view.

Level 1 executes its notebooks; level 2 trains a versioned model file and serves it with gunicorn
for a real request; level 3 runs its Prefect flow (one local Prefect server for the whole demo),
registers the best candidate and promotes it; level 4 trains a challenger with that flow, serves
champion and challenger as an A/B test under gunicorn, replays a day of traffic through it,
records the actuals, monitors the day with Evidently, reports the A/B test and gates the
challenger (``deploy``); level 5 simulates a few weeks of the closed loop on a virtual clock;
then the comparison of the five levels over the same simulated period (``mlops-levels compare``,
shortened), with its HTML report. All state lives under ``WORKBOOK_HOME``.

What the closing table shows, and the test checks: levels 1 and 2 score the same validation RMSE
(the refactoring changed nothing); level 3's ``linear`` candidate scores it again inside the flow
(the flow prepares the same data), and level 3 keeps the candidate with the lowest validation RMSE.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taxi_common.errors import WorkbookError
from taxi_common.local_servers import free_port, http_ok, stop_process_group, wait_until_healthy
from taxi_common.settings import Settings

Echo = Callable[[str], None]
DEMO_RIDE = {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 1.2}


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs on."""

    source: str = "synthetic"
    train_month: str = "2021-01"
    val_month: str = "2021-02"
    n_rows: int | None = None
    level3_models: tuple[str, ...] = ("linear", "ridge", "hist_gb")
    trials: int = 2
    challenger_model: str = "ridge"  # level 4: the challenger the A/B test and the gate judge
    replay_trips: int = 1500  # level 4: trips of the day replayed through the service
    simulate_days: int = 21  # level 5
    compare_days: int = 30  # the comparison
    rows_per_day: int = 1000  # levels 5 and the comparison: synthetic trips a day


@dataclass
class LevelResult:
    """One row of the demo's closing table."""

    level: str
    model: str
    val_rmse: float | None  # None where the level's figure is not a validation RMSE
    artifact: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    #: Validation RMSE of each candidate the level compared (level 3), by model name.
    candidates: dict[str, float] = field(default_factory=dict)


def run_level1(options: DemoOptions, settings: Settings, echo: Echo) -> LevelResult:
    """Execute the level-1 notebooks; the PU_DO linear regression's validation RMSE."""
    from level1_notebooks.runner import run_level1 as execute

    start = time.perf_counter()
    out = settings.reports_dir / "demo" / "level1"
    table = execute(settings=settings, source=options.source, train_month=options.train_month,
                    val_month=options.val_month, n_rows=options.n_rows, output_dir=out)
    row = table[(table["features"] == "PU_DO") & (table["model"] == "linear")].iloc[0]
    return LevelResult("1 notebooks", "PU_DO linear (DictVectorizer)", float(row["val_rmse"]),
                       str(out / "model.bin"), time.perf_counter() - start,
                       [f"executed notebooks in {out}"])


def run_level2(options: DemoOptions, settings: Settings, echo: Echo) -> LevelResult:
    """Train a versioned model file, then serve it under gunicorn for one real request."""
    from level2_devops.training import TrainConfig, train_and_save

    start = time.perf_counter()
    config = TrainConfig(train_month=options.train_month, val_month=options.val_month,
                         source=options.source, n_rows=options.n_rows)
    result = train_and_save(config, settings=settings, progress=echo)
    with level2_service(result.model_path, settings) as base_url:
        answer = post_json(f"{base_url}/predict", DEMO_RIDE)
        served = metric_value(fetch(f"{base_url}/metrics"), "taxi_predictions_total")
    echo(f"  gunicorn answered {json.dumps(DEMO_RIDE)} -> {answer}")
    return LevelResult("2 devops", f"{result.metadata['model']} (versioned model file)",
                       float(result.metadata["metrics"]["val_rmse"]), str(result.model_path),
                       time.perf_counter() - start,
                       [f"service predicted {answer['duration']:.2f} min with model "
                        f"{answer['model_version']}; /metrics: {served}"])


def run_level3(options: DemoOptions, settings: Settings, echo: Echo) -> LevelResult:
    """Run the Prefect training flow against one local Prefect server; promote the winner."""
    from level3_training.pipeline import TrainConfig, run_training
    from level3_training.registry import client_for, promote
    from level3_training.runtime import prepare_environment

    start = time.perf_counter()
    prepare_environment(settings)
    config = TrainConfig((options.train_month,), options.val_month, source=options.source,
                         models=options.level3_models, trials=options.trials,
                         n_rows=options.n_rows)
    with _prefect_api(settings, echo):
        summary = run_training(config, settings)
    aliases = promote(client_for(settings.tracking_uri), str(summary["version"]))
    candidates = {c["name"]: float(c["val_rmse"]) for c in summary["candidates"]}
    scores = ", ".join(f"{name} {rmse:.4f}" for name, rmse in candidates.items())
    return LevelResult("3 training", f"{summary['best']} (best of {len(candidates)}"
                       f" candidates)", float(summary["best_val_rmse"]),
                       f"models:/taxi-duration/{summary['version']} @champion",
                       time.perf_counter() - start,
                       [f"candidates' val RMSE: {scores}",
                        f"MLflow run {summary['parent_run_id']}; champion {aliases['champion']},"
                        f" previous {aliases['previous']}"],
                       candidates)


@contextmanager
def _prefect_api(settings: Settings, echo: Echo) -> Iterator[None]:
    """Use the configured Prefect API, a background server started by `mlops-levels level3
    server start`, or else one local server started for the demo alone."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from level3_training.prefect_server import recorded_server, running_server

    record = recorded_server(settings.prefect_home)
    if record:
        echo(f"  using the background Prefect server at {record['api_url']}")
        os.environ["PREFECT_API_URL"] = str(record["api_url"])
        try:
            with _prefect_settings(str(record["api_url"])):
                yield
        finally:
            os.environ.pop("PREFECT_API_URL", None)
        return
    echo("  starting a local Prefect server under WORKBOOK_HOME …")
    with running_server(settings.prefect_home) as server:
        os.environ["PREFECT_API_URL"] = server.api_url
        try:
            with _prefect_settings(server.api_url):
                yield
        finally:
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)  # send queued run logs while the server is up
            os.environ.pop("PREFECT_API_URL", None)


@contextmanager
def _prefect_settings(api_url: str) -> Iterator[None]:
    """Prefect reads its settings from the environment once, when it is first imported: a
    second demo in the same process (a test, a notebook) must hand the new server's URL to
    Prefect's settings context too, or its client calls the first, stopped server."""
    if "prefect" not in sys.modules:
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield


@contextmanager
def level2_service(model_path: Path, settings: Settings, timeout: float = 60.0) -> Iterator[str]:
    """``mlops-levels level2 serve`` on a free loopback port; its base URL; stopped afterwards."""
    with _served(["level2", "serve", "--model", str(model_path), "--workers", "1"], settings,
                 "level2", timeout=timeout, stop_timeout=10) as base_url:
        yield base_url


@contextmanager
def _served(args: list[str], settings: Settings, name: str, *, timeout: float,
            stop_timeout: float) -> Iterator[str]:
    """``mlops-levels ARGS --port P`` on a free loopback port, logged under the home's logs,
    healthy; its base URL; its process group stopped afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "workbook", *args, "--port", str(port)]
    env = {**os.environ, "WORKBOOK_HOME": str(settings.workbook_home)}
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.logs_dir / f"demo-{name}-service-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, start_new_session=True, stdout=log,
                                   stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, lambda: http_ok(f"{base_url}/health"),
                           what=f"the {name} service", timeout=timeout, log_path=log_path)
        yield base_url
    finally:
        stop_process_group(process.pid, timeout=stop_timeout)
        process.wait(timeout=5)


def fetch(url: str) -> str:
    """The body of a GET request."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        return response.read().decode()


def post_json(url: str, payload: Any) -> Any:
    """POST ``payload`` as JSON; the decoded answer."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def metric_value(exposition: str, prefix: str) -> str:
    """The first sample line of the Prometheus text whose metric name contains ``prefix``."""
    for line in exposition.splitlines():
        if not line.startswith("#") and prefix in line.split("{")[0].split(" ")[0]:
            return line
    return "(no such metric)"


def run_level4(options: DemoOptions, settings: Settings, echo: Echo) -> LevelResult:
    """A challenger from level 3's flow; champion and challenger served as an A/B test under
    gunicorn; a replayed day, its actuals, its monitoring; the A/B report; the gate."""
    from level3_training.pipeline import TrainConfig, run_training
    from level3_training.registry import aliases, client_for
    from level3_training.runtime import prepare_environment
    from level4_deployment import ab, store, traffic
    from level4_deployment.deploy import deploy

    start = time.perf_counter()
    prepare_environment(settings)
    client = client_for(settings.tracking_uri)
    if "champion" not in aliases(client):
        raise WorkbookError("level 4 needs a champion in the registry: run the demo with "
                            "level 3 first (--levels 3,4)")
    config = TrainConfig((options.train_month,), options.val_month, source=options.source,
                         models=(options.challenger_model,), trials=1, n_rows=options.n_rows)
    echo(f"  training a challenger ({options.challenger_model}) with level 3's flow …")
    with _prefect_api(settings, echo):
        challenger = str(run_training(config, settings)["version"])
    month = _month_after(options.val_month)
    trips = traffic.trips_for_days(month, [1], settings=settings, source=options.source,
                                   seed=0).head(options.replay_trips)
    with level4_service(settings) as base_url:
        replayed = traffic.replay(base_url, trips, rate=1000.0, progress=False)
        echo(f"  replayed {replayed.ok:,} trips of {month}-01 to the A/B service: "
             f"{replayed.variants}")
    engine = store.engine_for(settings)
    store.create_tables(engine)
    store.record_actuals(engine, traffic.actuals_through(month, 1, settings=settings,
                                                         source=options.source, seed=0))
    joined = store.joined_predictions(engine)
    report = ab.ab_report(joined, ab.DEFAULT_MIN_SAMPLES)  # fixed before the test: no peeking
    monitoring = _monitor_first_day(settings, engine, trips, options)
    outcome = deploy(settings)
    champion = aliases(client).get("champion")
    gate = "promoted" if outcome.promoted else "rejected"
    drift = monitoring["drift_share"]
    return LevelResult("4 deployment", f"A/B: champion vs v{challenger} "
                       f"({options.challenger_model})", None,
                       f"models:/taxi-duration/{champion} @champion",
                       time.perf_counter() - start,
                       [f"A/B on {len(joined):,} labelled rides: {report['verdict']}"
                        + (f" (the test waits for {ab.DEFAULT_MIN_SAMPLES:,} rides per "
                           "variant, fixed before it began)"
                           if report["verdict"] == ab.NOT_ENOUGH_DATA else ""),
                        f"monitoring of {monitoring['day']}: drift share "
                        f"{'-' if drift is None else f'{drift:.2f}'}, alerts "
                        f"{monitoring['alerts']}, report {monitoring['html']}",
                        f"gate: v{challenger} {gate} ({outcome.report.lines()[-1]})"])


def _month_after(month: str) -> str:
    year, number = (int(part) for part in month.split("-"))
    return f"{year + number // 12:04d}-{number % 12 + 1:02d}"


def _monitor_first_day(settings: Settings, engine: Any, trips: Any,
                       options: DemoOptions) -> dict[str, Any]:
    """Level 4's monitoring of the replayed day against the champion's reference (its
    predictions of the validation month)."""
    from level3_training.registry import client_for, load_version
    from level4_deployment.cli import default_reference_path
    from level4_deployment.monitoring import monitor_days
    from level4_deployment.monitoring_config import load_config
    from level4_deployment.reference import load_reference, write_reference

    version, pipeline = load_version(client_for(settings.tracking_uri), "champion")
    first = min(trips["pickup_datetime"].dt.date)
    reference = load_reference(write_reference(pipeline, options.val_month, settings=settings,
                                               path=default_reference_path(settings),
                                               model_version=version, source=options.source,
                                               rows=5000, seed=0))
    [day] = monitor_days([first], engine=engine, reference=reference, config=load_config(),
                         settings=settings, by="pickup")
    return {"day": first.isoformat(), "drift_share": day.metrics.get("drift_share", 0.0),
            "alerts": len(day.alerts), "html": day.html}


@contextmanager
def level4_service(settings: Settings, timeout: float = 120.0) -> Iterator[str]:
    """``mlops-levels level4 serve --ab challenger=50`` on a free loopback port (one gunicorn
    worker); its base URL; stopped (the prediction log flushed) afterwards."""
    with _served(["level4", "serve", "--workers", "1", "--ab", "challenger=50"], settings,
                 "level4", timeout=timeout, stop_timeout=30) as base_url:
        yield base_url


def run_level5(options: DemoOptions, settings: Settings, echo: Echo) -> LevelResult:
    """A few weeks of the closed loop on a virtual clock (``level5 simulate``, shortened)."""
    from level5_automation.policy import load_policy
    from level5_automation.report import write_html
    from level5_automation.simulation import SimulationConfig, simulate
    from workbook.compare import quiet_libraries

    start = time.perf_counter()
    quiet_libraries()  # the day-by-day alerts are in the simulation's page, summed up below
    config = SimulationConfig(days=options.simulate_days, rows_per_day=options.rows_per_day)
    echo(f"  simulating {config.days} days of {config.scenario} (onset {config.drift_onset}) …")
    result = simulate(config, load_policy(), settings.workbook_home / "demo-level5",
                      base_settings=dataclasses.replace(settings, prefect_api_url=None))
    page = write_html(result, settings.reports_dir / "demo" / "level5-simulation.html")
    recovery = result.recovery(days=3)
    kinds = [e.kind for e in result.events if not e.details.get("bootstrap")]
    after = [d.rmse for d in result.days[-5:] if d.rmse is not None]
    frozen = [d.frozen_rmse for d in result.days[-5:] if d.frozen_rmse is not None]
    return LevelResult("5 automation", "the closed loop (policy.toml)", None, str(page),
                       time.perf_counter() - start,
                       [f"{kinds.count('alert')} alerts, {kinds.count('retrain')} retrains, "
                        f"{kinds.count('promote')} promotions; first alert "
                        f"{recovery['alert_after_days']} day(s) after the onset, first "
                        f"promotion {recovery['promotion_after_days']}",
                        f"last 5 days' RMSE {np.mean(after):.2f} with the loop, "
                        f"{np.mean(frozen):.2f} frozen"])


LEVELS: dict[str, Callable[[DemoOptions, Settings, Echo], LevelResult]] = {
    "1": run_level1, "2": run_level2, "3": run_level3, "4": run_level4, "5": run_level5,
}


def run_comparison(options: DemoOptions, settings: Settings, echo: Echo = print) -> str:
    """``mlops-levels compare`` over ``compare_days``: the table, and the report's path."""
    from workbook.compare import Assumptions, CompareConfig, compare, default_home, format_table
    from workbook.report import write_report

    echo(f"\n== the five levels compared ({options.compare_days} simulated days) ==")
    config = CompareConfig(days=options.compare_days, rows_per_day=options.rows_per_day)
    report = compare(config, Assumptions(), default_home(settings), base_settings=settings,
                     progress=echo)
    page = write_report(report, settings.workbook_home / "report")
    return f"{format_table(report)}\nthe HTML report: {page}"


def run_demo(options: DemoOptions, settings: Settings, echo: Echo = print,
             levels: tuple[str, ...] = tuple(LEVELS)) -> list[LevelResult]:
    """Run the chosen levels in order, echoing progress; their results."""
    results = []
    with ExitStack() as stack:
        if {"3", "4"} & set(levels):  # one Prefect server for levels 3 and 4: Prefect's
            stack.enter_context(_prefect_api(settings, echo))  # client keeps the first URL
        for number in levels:
            echo(f"\n== level {number} ==")
            results.append(LEVELS[number](options, settings, echo))
    return results


def format_results(results: list[LevelResult], options: DemoOptions) -> str:
    """The closing table: one line per level, then each level's notes."""
    lines = [f"train {options.train_month} -> validate {options.val_month} "
             f"({options.source} data)",
             f"{'level':<13}{'model':<40}{'val RMSE':>9}{'seconds':>9}  artifact"]
    for r in results:
        rmse = "-" if r.val_rmse is None else f"{r.val_rmse:.4f}"
        lines.append(f"{r.level:<13}{r.model:<40}{rmse:>9}{r.seconds:>9.1f}  {r.artifact}")
    for r in results:
        lines.extend(f"  level {r.level.split()[0]}: {note}" for note in r.notes)
    return "\n".join(lines)
