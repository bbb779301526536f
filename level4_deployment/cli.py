"""Commands of level4_deployment, mounted as ``mlops-levels level4 …``.

Only typer and the standard library are imported here; SQLAlchemy, pandas, Evidently and
Prefect are imported inside the commands. Errors a user can cause end in one line
(``error: …``, exit code 2).

The commands that read trips (``replay``, ``actuals``, ``reference``) take the same data options;
give ``replay`` and ``actuals`` the same ones, so that their ride ids match.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Level 4, automated deployment: serve the registry's champion (A/B, "
                  "shadow, hot reload), log predictions, analyse A/B tests, monitor with "
                  "Evidently, gate and promote, score months in batch.", no_args_is_help=True)

SOURCE_HELP = "Data source: synthetic or tlc."
SCENARIO_HELP = "Synthetic drift scenario: baseline, congestion, hotspot or data-quality."


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """A user's error ends in ``error: …`` on stderr and exit code 2, never a traceback."""
    from taxi_common.errors import WorkbookError

    try:
        yield
    except WorkbookError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None


def _settings() -> Any:
    from taxi_common.settings import Settings

    return Settings.from_env()


def _engine(settings: Any) -> Any:
    from sqlalchemy.exc import OperationalError

    from level4_deployment.store import create_tables, engine_for
    from taxi_common.errors import WorkbookError

    engine = engine_for(settings)
    try:
        create_tables(engine)
    except OperationalError as exc:
        raise WorkbookError(f"the level-4 database does not answer ({str(exc.orig).strip()}): "
                            "check DATABASE_URL") from None
    return engine


def _scenario(name: str, start_day: int, strength: float) -> Any:
    from taxi_common.scenarios import Scenario

    return Scenario(name=name, start_day=start_day, strength=strength)


def default_reference_path(settings: Any) -> Path:
    """Where ``reference`` writes and ``monitor`` reads the reference by default."""
    return Path(settings.workbook_home) / "level4" / "reference.parquet"


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
def replay(
    month: str = typer.Option(..., help="Month of the trips to send, YYYY-MM."),
    days: str = typer.Option("1-7", help="Days of the month: 1-7, 3 or 1,3,5-6."),
    rate: float = typer.Option(200.0, help="At most this many requests a second."),
    url: str = typer.Option("http://127.0.0.1:8000", help="The local service's base URL."),
    source: str = typer.Option("synthetic", help=SOURCE_HELP),
    rows: int | None = typer.Option(None, help="Trips of the month (synthetic: a smaller month; "
                                    "tlc: the first rows)."),
    seed: int = typer.Option(0, help="Seed of synthetic data."),
    scenario: str = typer.Option("baseline", help=SCENARIO_HELP),
    start_day: int = typer.Option(1, help="Day the scenario starts."),
    strength: float = typer.Option(1.0, help="Scenario strength (0 none, 1 calibrated)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Send the trips of DAYS of MONTH to the service, one POST /predict each, with ride ids."""
    with _one_line_errors():
        from level4_deployment.traffic import parse_days, trips_for_days
        from level4_deployment.traffic import replay as send

        settings = _settings()
        trips = trips_for_days(month, parse_days(days), settings=settings, source=source,
                               rows=rows, seed=seed,
                               scenario=_scenario(scenario, start_day, strength))
        typer.echo(f"replaying {len(trips):,} trips of {month} days {days} to {url} at "
                   f"<= {rate:g}/s", err=True)
        result = send(url, trips, rate=rate, progress=True)
    if as_json:
        _echo_json(result.as_dict())
        return
    versions = ", ".join(f"{v} ({n})" for v, n in sorted(result.versions.items())) or "-"
    typer.echo(f"sent {result.sent}: ok {result.ok}, rejected {result.rejected}, failed "
               f"{result.failed} in {result.seconds:.1f} s; model versions: {versions}")
    if result.first_error:
        typer.echo(f"first error: {result.first_error}")


@app.command()
def actuals(
    month: str = typer.Option(..., help="Month of the trips, YYYY-MM."),
    through_day: int | None = typer.Option(
        None, help="Record the trips that ended by the end of this day (default: all)."),
    source: str = typer.Option("synthetic", help=SOURCE_HELP),
    rows: int | None = typer.Option(None, help="Trips of the month (as given to replay)."),
    seed: int = typer.Option(0, help="Seed of synthetic data."),
    scenario: str = typer.Option("baseline", help=SCENARIO_HELP),
    start_day: int = typer.Option(1, help="Day the scenario starts."),
    strength: float = typer.Option(1.0, help="Scenario strength (0 none, 1 calibrated)."),
) -> None:
    """Record the true durations (actuals) of MONTH's ended trips, by ride id."""
    with _one_line_errors():
        from level4_deployment.store import record_actuals
        from level4_deployment.traffic import actuals_through

        settings = _settings()
        found = actuals_through(month, through_day, settings=settings, source=source, rows=rows,
                                seed=seed, scenario=_scenario(scenario, start_day, strength))
        added = record_actuals(_engine(settings), found)
    until = f" through day {through_day}" if through_day else ""
    typer.echo(f"{month}{until}: {len(found):,} ended trips, {added:,} new actuals recorded")


@app.command()
def log(
    check: bool = typer.Option(False, "--check", help="Check the log's integrity (duplicates, "
                               "invalid rows, journals left by dead workers); exit 1 when "
                               "something is wrong."),
    recover: bool = typer.Option(False, "--recover", help="Write the journalled rows of dead "
                                 "workers that the log lacks, then remove their journals."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """How many predictions the log holds: in total, by variant and by model version."""
    if check or recover:
        _log_check_or_recover(check, recover, as_json)
        return
    with _one_line_errors():
        from level4_deployment.store import prediction_summary

        summary = prediction_summary(_engine(_settings()))
    if as_json:
        _echo_json(summary)
        return
    typer.echo(f"predictions logged: {summary['total']:,}")
    for title, key in (("by variant", "by_variant"), ("by model version", "by_version")):
        parts = ", ".join(f"{k} {n:,}" for k, n in summary[key].items()) or "-"
        typer.echo(f"  {title}: {parts}")


def _log_check_or_recover(check: bool, recover: bool, as_json: bool) -> None:
    """``log --recover`` (first) and/or ``log --check``; exit 1 when the check finds a problem."""
    with _one_line_errors():
        from level4_deployment.journal import inspect_journals, journal_dir, recover_journals
        from level4_deployment.store import check_predictions

        settings = _settings()
        engine, directory = _engine(settings), journal_dir(settings)
        out: dict[str, Any] = {"journal_dir": str(directory)}
        if recover:
            done = recover_journals(engine, directory)
            out["recovered"] = {"files": len(done),
                                "rows": sum(r.recovered_rows for r in done),
                                "journals": [r.as_dict() for r in done]}
        if check:
            out["check"] = check_predictions(engine)
            out["journals"] = [r.as_dict() for r in inspect_journals(directory, engine)]
            out["problems"] = _log_problems(out["check"], out["journals"])
            out["ok"] = not out["problems"]
    if as_json:
        _echo_json(out)
    else:
        _print_log_check(out)
    if check and not out["ok"]:
        raise typer.Exit(1)


def _log_problems(found: dict[str, Any], journals: list[dict[str, Any]]) -> list[str]:
    """What is wrong with the prediction log, one line each (empty: nothing)."""
    problems = []
    if found["duplicate_rows"]:
        problems.append(f"{found['duplicate_rows']} duplicate rows ({found['duplicated_rides']} "
                        "rides of a request logged more than once)")
    problems += [f"{n} rows with {rule}" for rule, n in found["invalid_rows"].items()]
    for j in journals:
        if j["state"] == "corrupt" or j["corrupt_lines"]:
            problems.append(f"journal {j['file']}: {j['corrupt_lines']} unreadable lines")
        elif j["missing_rows"]:
            whose = "a dead worker" if not j["owner_alive"] else f"worker {j['pid']}"
            problems.append(f"journal {j['file']} of {whose} holds {j['missing_rows']} rows "
                            "the log lacks: run `mlops-levels level4 log --recover`")
    return problems


def _print_log_check(out: dict[str, Any]) -> None:
    if "recovered" in out:
        rec = out["recovered"]
        typer.echo(f"recovered {rec['rows']:,} rows from {rec['files']} journals in "
                   f"{out['journal_dir']}")
    if "check" not in out:
        return
    found = out["check"]
    typer.echo(f"prediction log: {found['rows']:,} rows of {found['request_ids']:,} requests; "
               f"{found['duplicate_rows']} duplicate rows; "
               f"{sum(found['invalid_rows'].values())} invalid rows")
    for j in out["journals"]:
        owner = "live" if j["owner_alive"] else "dead"
        missing = "" if j["missing_rows"] is None else f", {j['missing_rows']} not in the log"
        typer.echo(f"  journal {j['file']} ({owner} worker {j['pid']}, {j['state']}): "
                   f"{j['rows']} rows{missing}")
    for problem in out["problems"]:
        typer.echo(f"PROBLEM {problem}")
    typer.echo("integrity check: OK" if out["ok"] else
               f"integrity check: {len(out['problems'])} problems")


@app.command("ab-report")
def ab_report(
    min_samples: int | None = typer.Option(
        None, help="Rides per variant the test runs on, fixed in advance (default: the power "
        "calculation's 1571)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Champion vs challenger on the logged predictions that have actuals."""
    with _one_line_errors():
        from level4_deployment.ab import DEFAULT_MIN_SAMPLES, format_report
        from level4_deployment.ab import ab_report as report_for
        from level4_deployment.store import joined_predictions

        joined = joined_predictions(_engine(_settings()))
        report = report_for(joined, min_samples or DEFAULT_MIN_SAMPLES)
    if as_json:
        _echo_json(report)
    else:
        typer.echo(format_report(report))


@app.command()
def reference(
    version: str = typer.Option("champion", help="Registry version or alias whose validation "
                                "month (and predictions) become the reference."),
    model_file: Path | None = typer.Option(None, help="Use a model file written by `level2 "
                                           "train` instead of the registry (needs --month)."),
    month: str | None = typer.Option(None, help="The model's validation month, YYYY-MM "
                                     "(default: the version's data.val_month tag)."),
    out: Path | None = typer.Option(None, help="Parquet file to write "
                                    "(default: $WORKBOOK_HOME/level4/reference.parquet)."),
    source: str | None = typer.Option(None, help=SOURCE_HELP + " (default: the version's)."),
    rows: int | None = typer.Option(None, help="Trips of the month."),
    seed: int | None = typer.Option(None, help="Seed of synthetic data (default: the "
                                    "version's)."),
) -> None:
    """Write the monitoring reference: the champion's validation month with its predictions."""
    with _one_line_errors():
        from level4_deployment.reference import load_reference, write_reference

        settings = _settings()
        target = out or default_reference_path(settings)
        if model_file is not None:
            from level2_devops.model_store import load_model
            from taxi_common.errors import BadInputError

            if month is None:
                raise BadInputError("--model-file needs --month (the model's validation month)")
            pipeline, metadata = load_model(model_file)
            path = write_reference(pipeline, month, settings=settings, path=target,
                                   model_version=metadata.get("version"),
                                   source=source or "synthetic", rows=rows, seed=seed or 0)
        else:
            from level3_training.runtime import check_services, prepare_environment
            from level4_deployment.reference import write_registry_reference

            prepare_environment(settings)
            check_services(settings, prefect=False)
            path = write_registry_reference(settings, version, path=target, month=month,
                                            source=source, rows=rows, seed=seed)
        written = load_reference(path)
    typer.echo(f"reference {path}: {len(written.frame):,} trips of {written.month}, model "
               f"{written.model_version or '?'}, MAE {written.mae:.3f}, RMSE {written.rmse:.3f}")


def _use_prefect_server(settings: Any) -> None:
    """Level 3's environment (PREFECT_HOME under WORKBOOK_HOME, no telemetry), and its
    background server's URL when one is recorded and PREFECT_API_URL is not set."""
    from level3_training.prefect_server import recorded_server
    from level3_training.runtime import prepare_environment

    prepare_environment(settings)
    if os.environ.get("PREFECT_API_URL"):
        return
    record = recorded_server(settings.prefect_home)
    if record:
        os.environ["PREFECT_API_URL"] = str(record["api_url"])
    else:
        typer.echo("note: no PREFECT_API_URL: Prefect starts a temporary server (10-20 s); "
                   "`mlops-levels level3 server start` keeps one running", err=True)


@app.command()
def monitor(
    day: str | None = typer.Option(None, help="Day to monitor, YYYY-MM-DD."),
    first: str | None = typer.Option(None, "--from", help="First day of a range, YYYY-MM-DD."),
    last: str | None = typer.Option(None, "--to", help="Last day of a range (included)."),
    reference_path: Path | None = typer.Option(
        None, "--reference", help="Reference parquet (default: the one `reference` wrote)."),
    config: Path | None = typer.Option(
        None, help="Monitoring TOML (default: the documented one in the package)."),
    by: str = typer.Option("logged_at", help="Place predictions in days by logged_at (when "
                           "served) or pickup (replayed historical trips)."),
    flow: bool = typer.Option(True, help="Run as the Prefect flow (--no-flow: plain functions)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Monitor a day (or days) of logged traffic: Evidently report, metrics, alerts."""
    with _one_line_errors():
        from level4_deployment.monitoring import day_range, parse_day
        from level4_deployment.monitoring_config import load_config
        from level4_deployment.reference import load_reference
        from taxi_common.errors import BadInputError

        if (day is None) == (first is None or last is None) or (day and (first or last)):
            raise BadInputError("monitor needs --day DAY, or --from DAY and --to DAY")
        days = [parse_day(day)] if day else day_range(parse_day(first), parse_day(last))
        settings = _settings()
        path = reference_path or default_reference_path(settings)
        ref = load_reference(path)  # a bad reference or config fails before any work
        cfg = load_config(config)
        engine = _engine(settings)
        if flow:
            results = _run_flow(settings, path, config, by, day, first, last)
        else:
            from level4_deployment.monitoring import monitor_days

            results = [r.as_dict() for r in monitor_days(days, engine=engine, reference=ref,
                                                         config=cfg, settings=settings, by=by)]
    if as_json:
        _echo_json(results)
    else:
        _print_monitoring(results)


def _run_flow(settings: Any, reference_path: Path, config: Path | None, by: str,
              day: str | None, first: str | None, last: str | None) -> list[dict[str, Any]]:
    _use_prefect_server(settings)
    from level3_training.runtime import quiet_user_error_tracebacks
    from level4_deployment.flows import monitor_flow

    quiet_user_error_tracebacks()
    return monitor_flow(reference_path=str(reference_path), day=day, start=first, end=last,
                        config_path=str(config) if config else None, by=by,
                        workbook_home=str(settings.workbook_home))


def _print_monitoring(results: list[dict[str, Any]]) -> None:
    from level4_deployment.monitoring import DayResult, format_results, parse_day

    days = [DayResult(day=parse_day(r["day"]), rows=r["rows"], metrics=r["metrics"],
                      alerts=r["alerts"]) for r in results]
    typer.echo(format_results(days))
    for r in results:
        for alert in r["alerts"]:
            typer.echo(f"ALERT {alert['message']}")
    if results and results[-1].get("html"):
        typer.echo(f"reports: {Path(results[-1]['html']).parent}")
    if not any(r["rows"] for r in results):
        typer.echo("no champion traffic in these days; replayed historical trips are logged "
                   "today: use --by pickup", err=True)


@app.command()
def dashboard(port: int = typer.Option(8001, help="TCP port on 127.0.0.1.")) -> None:
    """Serve the Evidently UI over the monitoring workspace (Ctrl-C stops it)."""
    with _one_line_errors():
        from level4_deployment.dashboard import run_ui, workspace_dir

        settings = _settings()
        typer.echo(f"Evidently UI for {workspace_dir(settings)} at http://127.0.0.1:{port}",
                   err=True)
        code = run_ui(settings, port)
    raise typer.Exit(code)


@app.command()
def serve(
    port: int = typer.Option(8000, help="TCP port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    workers: int = typer.Option(2, help="gunicorn worker processes."),
    ab: str | None = typer.Option(None, help="A/B test: challenger=P serves @challenger to P % "
                                  "of rides (sticky by ride_id)."),
    shadow: bool = typer.Option(False, help="Score every ride with @challenger too, without "
                                "serving it; both predictions are logged."),
    reload_interval: float = typer.Option(5.0, help="Seconds between registry checks of each "
                                          "worker (±20 % jitter)."),
    log_predictions: bool = typer.Option(True, "--log/--no-log",
                                         help="Write every prediction to the prediction log."),
    journal: bool = typer.Option(True, "--journal/--no-journal",
                                 help="Keep a crash journal per worker, so that a killed worker "
                                 "loses no logged prediction (see `log --recover`)."),
    access_log: bool = typer.Option(False, help="Log every request to stderr."),
) -> None:
    """Serve models:/taxi-duration@champion with gunicorn; follow the aliases as they move."""
    with _one_line_errors():
        from level2_devops.service.server import ServeOptions
        from level3_training.runtime import prepare_environment
        from level4_deployment.routing import parse_ab
        from level4_deployment.serving import serve_registry

        share = parse_ab(ab)
        if reload_interval <= 0:
            from taxi_common.errors import BadInputError

            raise BadInputError(f"--reload-interval {reload_interval}: use a number of seconds "
                                "above 0")
        settings = _settings()
        prepare_environment(settings)  # bounded MLflow retries, no telemetry
        serve_registry(ServeOptions(host=host, port=port, workers=workers,
                                    access_log=access_log), settings,
                       challenger_share=share, shadow=shadow, reload_interval=reload_interval,
                       log_predictions=log_predictions, journal=journal)


@app.command()
def deploy(
    version: str | None = typer.Option(None, help="Version to deploy (default: @challenger)."),
    holdout_month: str | None = typer.Option(
        None, help="Labelled month both models are scored on, YYYY-MM (default: the month "
        "after the candidate's validation month)."),
    margin: float = typer.Option(0.01, help="How much worse than the champion's RMSE the "
                                 "candidate may be, as a share (0.01 = 1 %)."),
    rows: int | None = typer.Option(None, help="Cap the holdout's trips (default: the "
                                    "candidate's own row cap)."),
    dry_run: bool = typer.Option(False, help="Run the gate, promote nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Gate the challenger against the champion on the same holdout; promote it if it passes.

    Exit code 0 when promoted (or a dry run passed), 1 when the gate refused it, 2 for an error.
    """
    with _one_line_errors():
        from level3_training.runtime import check_services, prepare_environment
        from level4_deployment.deploy import deploy as run_deploy

        settings = _settings()
        prepare_environment(settings)
        check_services(settings, prefect=False)
        result = run_deploy(settings, version=version, holdout_month=holdout_month,
                            margin=margin, rows=rows, dry_run=dry_run)
    if as_json:
        _echo_json(result.to_json())
    else:
        for line in result.report.lines():
            typer.echo(line)
        if result.promoted:
            typer.echo(f"promoted: @champion -> version {result.aliases['champion']}; "
                       f"@previous -> {result.aliases.get('previous') or 'none'}")
        elif result.report.passed:
            typer.echo("dry run: nothing promoted")
        else:
            typer.echo("nothing changed: @champion stays version "
                       f"{result.aliases.get('champion') or '(none)'}")
    if not result.report.passed:
        raise typer.Exit(1)


@app.command()
def release(
    train_months: str = typer.Option("2021-01", help="Training months, YYYY-MM[,YYYY-MM…]."),
    val_month: str = typer.Option("2021-02", help="Validation month, YYYY-MM."),
    source: str = typer.Option("synthetic", help=SOURCE_HELP),
    models: str = typer.Option("linear,ridge,lasso,random_forest,hist_gb",
                               help="Comma-separated candidate models."),
    trials: int = typer.Option(3, help="Random-search trials per model."),
    seed: int = typer.Option(0, help="Seed of the search and of synthetic data."),
    rows: int | None = typer.Option(None, help="Cap the trips of each month."),
    scenario: str = typer.Option("baseline", help=SCENARIO_HELP),
    holdout_month: str | None = typer.Option(
        None, help="Month the gate scores both models on (default: after --val-month)."),
    margin: float = typer.Option(0.01, help="How much worse than the champion the new model "
                                 "may be, as a share of its RMSE."),
    as_json: bool = typer.Option(False, "--json", help="Print training and gate as JSON."),
) -> None:
    """From data to production in one command: level 3's training flow registers a challenger,
    then `deploy` gates it against the champion and promotes it if it passes.

    Exit code 0 when promoted, 1 when the gate refused it, 2 for an error.
    """
    with _one_line_errors():
        from level3_training.pipeline import TrainConfig, parse_models, run_training
        from level3_training.runtime import quiet_user_error_tracebacks
        from level4_deployment.deploy import deploy as run_deploy

        months = tuple(m.strip() for m in train_months.split(",") if m.strip())
        config = TrainConfig(months, val_month, source=source, models=parse_models(models),
                             trials=trials, seed=seed, n_rows=rows, scenario=scenario).check()
        settings = _settings()
        _use_prefect_server(settings)
        quiet_user_error_tracebacks()
        summary = run_training(config, settings)
        typer.echo(f"trained: best {summary['best']} (val RMSE {summary['best_val_rmse']:.4f}), "
                   f"registered version {summary['version']} as @challenger", err=True)
        result = run_deploy(settings, version=str(summary["version"]),
                            holdout_month=holdout_month, margin=margin, rows=rows)
    if as_json:
        _echo_json({"training": summary, "deploy": result.to_json()})
    else:
        for line in result.report.lines():
            typer.echo(line)
        typer.echo(f"released: version {result.aliases['champion']} is @champion" if
                   result.promoted else "not released: @champion is unchanged")
    if not result.report.passed:
        raise typer.Exit(1)


@app.command("score-batch")
def score_batch(
    month: str = typer.Option(..., help="Month to score, YYYY-MM."),
    out: Path | None = typer.Option(None, help="Parquet file to write (default: "
                                    "$WORKBOOK_HOME/reports/batch/scores-MONTH-vV.parquet)."),
    source: str = typer.Option("synthetic", help=SOURCE_HELP),
    color: str = typer.Option("green", help="Taxi color (synthetic data is green)."),
    version: str | None = typer.Option(None, help="Version or alias (default: champion)."),
    rows: int | None = typer.Option(None, help="Trips of a synthetic month (default: a real "
                                    "month's volume)."),
    seed: int = typer.Option(0, help="Seed of synthetic data."),
    scenario: str = typer.Option("baseline", help=SCENARIO_HELP),
    file: Path | None = typer.Option(None, "--file", help="Score this parquet file of raw "
                                     "trips (TLC schema) instead of the month's own file."),
    dask_address: str | None = typer.Option(
        None, help="Run the row groups on this Dask scheduler (tcp://HOST:PORT)."),
    local_dask: bool = typer.Option(False, help="Start a local Dask cluster on 127.0.0.1 for "
                                    "the run (2 worker processes)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Score a whole month with the champion into parquet, one row group at a time (a Prefect
    flow; on Dask with --dask-address or --local-dask)."""
    with _one_line_errors():
        from taxi_common.data import check_source
        from taxi_common.months import parse_month
        from taxi_common.scenarios import as_scenario

        parse_month(month)
        check_source(source)
        as_scenario(scenario)
        if file is not None and not file.is_file():
            from taxi_common.errors import BadInputError

            raise BadInputError(f"--file {file}: no such file")
        settings = _settings()
        _use_prefect_server(settings)
        from level3_training.runtime import check_services, quiet_user_error_tracebacks
        from level4_deployment.batch_flow import run_score_batch

        check_services(settings, prefect=False)
        quiet_user_error_tracebacks()
        summary = run_score_batch(
            {"month": month, "out": str(out) if out else None, "source": source,
             "color": color, "model_version": version, "seed": seed, "scenario": scenario,
             "rows": rows, "path": str(file) if file else None},
            dask_address=dask_address, local_dask=local_dask)
    if as_json:
        _echo_json(summary)
    else:
        typer.echo(f"scored {summary['rows']:,} trips of {month} ({summary['scored']:,} with a "
                   f"prediction) with version {summary['model_version']} in "
                   f"{summary['seconds']:.1f} s ({summary['row_groups']} row groups): "
                   f"{summary['out']}")


def main() -> None:
    """``python -m level4_deployment.cli``: the commands without the workbook's entry point."""
    app(prog_name="level4")


if __name__ == "__main__":
    sys.exit(main())
