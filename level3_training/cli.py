"""Commands of level3_training, mounted as `mlops-levels level3 …`.

Only typer, the standard library and the light ``taxi_common.scenarios`` are imported here;
Prefect, MLflow and scikit-learn are imported inside the commands, after the environment
(PREFECT_HOME, telemetry off) is set.
"""

from __future__ import annotations

import json
import os
from typing import Any

import typer

from taxi_common.scenarios import SCENARIOS

app = typer.Typer(help="level3_training: automated training (Prefect flow, MLflow tracking and "
                  "registry, hyper-parameter search).", no_args_is_help=True)
server_app = typer.Typer(help="A background Prefect server under WORKBOOK_HOME, reused by train.",
                         no_args_is_help=True)
app.add_typer(server_app, name="server")

ALL_MODELS = "linear,ridge,lasso,random_forest,hist_gb"


def _settings() -> Any:
    from taxi_common.settings import Settings

    return Settings.from_env()


def _use_prefect_server(settings: Any) -> None:
    """Point PREFECT_API_URL at the recorded background server, unless it is set already."""
    from level3_training.prefect_server import recorded_server

    if os.environ.get("PREFECT_API_URL"):
        return
    record = recorded_server(settings.prefect_home)
    if record:
        os.environ["PREFECT_API_URL"] = str(record["api_url"])
        return
    typer.echo("note: no PREFECT_API_URL: Prefect starts a temporary server for this run "
               "(10-20 s); `mlops-levels level3 server start` keeps one running", err=True)


def _print_summary(summary: dict[str, Any]) -> None:
    data = summary["data"]
    typer.echo(f"data: {data['source']} {data['color']} train {','.join(data['train_months'])} "
               f"({data['train_rows']} trips) -> val {data['val_month']} ({data['val_rows']} "
               f"trips); prepared-data cache hits: {sum(data['cache_hits'].values())}"
               f"/{len(data['cache_hits'])}")
    typer.echo(f"{'model':<14}{'trials':>7}{'train RMSE':>12}{'val RMSE':>10}{'val MAE':>9}  "
               "best params")
    for c in sorted(summary["candidates"], key=lambda c: c["val_rmse"]):
        params = ", ".join(f"{k}={v}" for k, v in sorted(c["params"].items())) or "-"
        typer.echo(f"{c['name']:<14}{len(c['trials']):>7}{c['train_rmse']:>12.4f}"
                   f"{c['val_rmse']:>10.4f}{c['val_mae']:>9.4f}  {params}")
    typer.echo(f"best: {summary['best']} (val RMSE {summary['best_val_rmse']:.4f}); "
               f"MLflow run {summary['parent_run_id']}")
    if summary["version"]:
        typer.echo(f"registered {summary['model_name']} version {summary['version']} as "
                   f"@{summary['alias']}; promote it with `mlops-levels level3 promote "
                   f"{summary['version']}`")


@app.command()
def train(
    train_months: list[str] = typer.Option(..., "--train-months", help="Training months, YYYY-MM: "
                                           "2021-01 2021-02, 2021-01,2021-02 or repeated."),
    more_months: list[str] | None = typer.Argument(
        None, hidden=True, help="Further training months given after --train-months."),
    val_month: str = typer.Option(..., "--val-month", help="Validation month, YYYY-MM."),
    source: str = typer.Option("synthetic", help="synthetic | tlc (real TLC files)."),
    color: str = typer.Option("green", help="Taxi color (synthetic data is green)."),
    models: str = typer.Option(ALL_MODELS, help="Comma-separated candidate models."),
    trials: int = typer.Option(3, help="Random-search trials per model (defaults included)."),
    seed: int = typer.Option(0, help="Seed of the search and of synthetic data."),
    rows: int | None = typer.Option(None, "--rows", help="Cap the rows of each month."),
    scenario: str = typer.Option("baseline", help="Synthetic drift scenario: "
                                 f"{' | '.join(SCENARIOS)}."),
    register: bool = typer.Option(True, help="Register the best candidate as @challenger."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run the Prefect training flow: search each model, log to MLflow, register the best."""
    from level3_training.pipeline import TrainConfig, parse_models, run_training
    from level3_training.runtime import quiet_user_error_tracebacks

    months = tuple(_split_months([*train_months, *(more_months or [])]))
    config = TrainConfig(months, val_month, source=source, color=color,
                         models=parse_models(models), trials=trials, seed=seed, n_rows=rows,
                         scenario=scenario, register=register).check()  # typos fail first
    settings = _settings()
    _use_prefect_server(settings)
    quiet_user_error_tracebacks()
    summary = run_training(config, settings)  # sets the environment, checks servers, runs
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)


def _split_months(values: list[str]) -> list[str]:
    """``["2021-01,2021-02", "2021-03"]`` -> the three months."""
    return [m.strip() for v in values for m in v.split(",") if m.strip()]


def _registry_client(settings: Any = None) -> Any:
    from level3_training.registry import client_for
    from level3_training.runtime import check_services, prepare_environment

    settings = settings or _settings()
    prepare_environment(settings)
    check_services(settings, prefect=False)
    return client_for(settings.tracking_uri)


REASON_HELP = "Why (recorded on the version as the audit tag promotion.reason)."
ACTOR_HELP = "Who (audit tag promotion.actor; default: your OS user name)."


@app.command()
def promote(
    version: str = typer.Argument(..., help="The version to make champion."),
    reason: str = typer.Option("", "--reason", help=REASON_HELP),
    actor: str | None = typer.Option(None, "--actor", help=ACTOR_HELP),
) -> None:
    """Move @champion to VERSION; the old champion becomes @previous."""
    from level3_training.registry import MODEL_NAME
    from level3_training.registry import promote as promote_version

    moved = promote_version(_registry_client(), version, reason=reason, actor=actor)
    typer.echo(f"{MODEL_NAME}: @champion -> version {moved['champion']}; "
               f"@previous -> {moved['previous'] or 'none (there was no champion)'}")


@app.command()
def rollback(
    reason: str = typer.Option("", "--reason", help=REASON_HELP),
    actor: str | None = typer.Option(None, "--actor", help=ACTOR_HELP),
) -> None:
    """Undo the last promotion: @champion -> @previous, and @previous is cleared.

    One rollback undoes one promotion: a second one is refused until a version is promoted.
    """
    from level3_training.registry import MODEL_NAME
    from level3_training.registry import rollback as rollback_champion

    moved = rollback_champion(_registry_client(), reason=reason, actor=actor)
    typer.echo(f"{MODEL_NAME}: @champion -> version {moved['champion']} (was "
               f"{moved['rolled_back'] or 'none'}); @previous cleared: the next rollback needs a "
               "promotion first")


@app.command()
def evaluate(
    versions: list[str] = typer.Argument(..., help="Versions or aliases, e.g. champion "
                                         "challenger 3: each is resolved to a number once."),
    month: str = typer.Option(..., "--month", help="The holdout month, YYYY-MM."),
    source: str = typer.Option("synthetic", help="synthetic | tlc (real TLC files)."),
    color: str = typer.Option("green", help="Taxi color (synthetic data is green)."),
    seed: int = typer.Option(0, help="Seed of synthetic data."),
    rows: int | None = typer.Option(None, "--rows", help="Cap the rows of the month."),
    scenario: str = typer.Option("baseline", help="Synthetic drift scenario: "
                                 f"{' | '.join(SCENARIOS)}."),
    as_json: bool = typer.Option(False, "--json", help="Print the evaluations as JSON."),
) -> None:
    """Score registered versions on the same holdout month: RMSE, MAE, trips, row fingerprint."""
    from level3_training.evaluation import evaluate_versions

    settings = _settings()
    results = evaluate_versions(_registry_client(settings), versions, month, settings,
                                source=source, color=color, seed=seed, scenario=scenario,
                                n_rows=rows)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in results], indent=2))
        return
    typer.echo(f"holdout: {source} {color} {month}, {results[0].n} trips, rows fingerprint "
               f"{results[0].fingerprint}")
    typer.echo(f"{'asked':<12}{'version':>8}{'RMSE':>9}{'MAE':>9}")
    for asked, r in zip(versions, results, strict=True):
        typer.echo(f"{asked:<12}{r.version:>8}{r.rmse:>9.4f}{r.mae:>9.4f}")


@app.command()
def lineage(version: str = typer.Argument(..., help="A registered version.")) -> None:
    """Where VERSION came from: data, months, rows, fingerprint, params, metrics, code, run."""
    from level3_training.registry import lineage as version_lineage

    for line in version_lineage(_registry_client(), version).lines():
        typer.echo(line)


@app.command()
def models() -> None:
    """The registered versions of taxi-duration with aliases and validation RMSE."""
    from level3_training.registry import MODEL_NAME, list_versions

    rows = list_versions(_registry_client())
    if not rows:
        typer.echo(f"no versions of {MODEL_NAME} yet: run `mlops-levels level3 train …`")
        return
    typer.echo(f"{'version':>8}  {'aliases':<28}{'model':<14}{'val RMSE':>9}  run id")
    for r in rows:
        rmse = f"{r['val_rmse']:.4f}" if r["val_rmse"] is not None else "-"
        typer.echo(f"{r['version']:>8}  {','.join(r['aliases']) or '-':<28}{r['model']:<14}"
                   f"{rmse:>9}  {r['run_id']}")


@server_app.command("start")
def server_start(port: int | None = typer.Option(None, help="Port (default: a free one).")) -> None:
    """Start a Prefect server in the background (PREFECT_HOME under WORKBOOK_HOME)."""
    from level3_training.prefect_server import recorded_server, start_server, write_record

    settings = _settings()
    record = recorded_server(settings.prefect_home)
    if record:
        typer.echo(f"already running: PREFECT_API_URL={record['api_url']} (pid {record['pid']})")
        return
    server = start_server(settings.prefect_home, port)
    write_record(server, settings.prefect_home)
    typer.echo(f"Prefect server running: PREFECT_API_URL={server.api_url} (pid "
               f"{server.process.pid}); UI at {server.api_url.removesuffix('/api')}; "
               f"stop it with `mlops-levels level3 server stop`")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the background Prefect server started by `server start`."""
    from level3_training.prefect_server import record_path, recorded_server
    from taxi_common.local_servers import stop_process_group

    settings = _settings()
    record = recorded_server(settings.prefect_home)
    if not record:
        typer.echo("no Prefect server recorded under WORKBOOK_HOME")
        return
    stop_process_group(int(record["pid"]))  # type: ignore[call-overload]
    record_path(settings.prefect_home).unlink(missing_ok=True)
    typer.echo(f"stopped the Prefect server (pid {record['pid']})")


@server_app.command("status")
def server_status() -> None:
    """Whether a background Prefect server is running, and its URL."""
    from level3_training.prefect_server import recorded_server

    record = recorded_server(_settings().prefect_home)
    typer.echo(f"running: PREFECT_API_URL={record['api_url']} (pid {record['pid']})" if record
               else "not running")
