"""``mlops-levels demo``: every built level end to end on the same months, then a side-by-side view.

Level 1 executes its notebooks; level 2 trains a versioned model file and serves it with gunicorn
for a real request; level 3 runs its Prefect flow (one local Prefect server for the whole demo),
registers the best candidate and promotes it. All state lives under ``WORKBOOK_HOME``.

What the closing table shows, and the test checks: levels 1 and 2 score the same validation RMSE
(the refactoring changed nothing); level 3's ``linear`` candidate scores it again inside the flow
(the flow prepares the same data), and level 3 keeps the candidate with the lowest validation RMSE.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class LevelResult:
    """One row of the demo's closing table."""

    level: str
    model: str
    val_rmse: float
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
            yield
        finally:
            os.environ.pop("PREFECT_API_URL", None)
        return
    echo("  starting a local Prefect server under WORKBOOK_HOME …")
    with running_server(settings.prefect_home) as server:
        os.environ["PREFECT_API_URL"] = server.api_url
        try:
            yield
        finally:
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)  # send queued run logs while the server is up
            os.environ.pop("PREFECT_API_URL", None)


@contextmanager
def level2_service(model_path: Path, settings: Settings, timeout: float = 60.0) -> Iterator[str]:
    """``mlops-levels level2 serve`` on a free loopback port; its base URL; stopped afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "workbook", "level2", "serve", "--model", str(model_path),
               "--port", str(port), "--workers", "1"]
    env = {**os.environ, "WORKBOOK_HOME": str(settings.workbook_home)}
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.logs_dir / f"demo-level2-service-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, start_new_session=True, stdout=log,
                                   stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, lambda: http_ok(f"{base_url}/health"),
                           what="the level-2 service", timeout=timeout, log_path=log_path)
        yield base_url
    finally:
        stop_process_group(process.pid, timeout=10)
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


LEVELS: dict[str, Callable[[DemoOptions, Settings, Echo], LevelResult]] = {
    "1": run_level1, "2": run_level2, "3": run_level3,
}


def run_demo(options: DemoOptions, settings: Settings, echo: Echo = print,
             levels: tuple[str, ...] = tuple(LEVELS)) -> list[LevelResult]:
    """Run the chosen levels in order, echoing progress; their results."""
    results = []
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
        lines.append(f"{r.level:<13}{r.model:<40}{r.val_rmse:>9.4f}{r.seconds:>9.1f}  {r.artifact}")
    for r in results:
        lines.extend(f"  level {r.level.split()[0]}: {note}" for note in r.notes)
    return "\n".join(lines)
