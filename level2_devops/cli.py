"""Commands of level2_devops, mounted as `mlops-levels level2 …`."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Level 2, DevOps without MLOps: train a versioned model file, "
                  "serve it with gunicorn.", no_args_is_help=True)


@app.command()
def train(
    train_month: str = typer.Option("2021-01", help="Month to train on, YYYY-MM."),
    val_month: str | None = typer.Option(
        None, help="Month to validate on, YYYY-MM (default: the month after --train-month)."),
    source: str = typer.Option("synthetic", help="Data source: synthetic or tlc."),
    color: str = typer.Option("green", help="Taxi color (synthetic data is green only)."),
    model: str = typer.Option(
        "linear", help="Model from the catalogue: linear, ridge, lasso, random_forest, hist_gb."),
    param: list[str] = typer.Option(
        [], "--param", help="Model parameter key=value (repeatable), for example alpha=0.1."),
    rows: int | None = typer.Option(None, help="Use at most this many trips of each month."),
    seed: int = typer.Option(0, help="Random seed of synthetic data."),
    models_dir: Path | None = typer.Option(
        None, help="Folder of the versioned model files (default: $WORKBOOK_HOME/models)."),
) -> None:
    """Train a model and write the next version of the model file with its metadata JSON."""
    from level2_devops.training import TrainConfig, parse_params, train_and_save
    from taxi_common.errors import WorkbookError
    from taxi_common.settings import Settings

    try:
        config = TrainConfig(train_month=train_month, val_month=val_month, source=source,
                             color=color, model=model, params=parse_params(param), n_rows=rows,
                             seed=seed, models_dir=models_dir)
        result = train_and_save(config, settings=Settings.from_env(), progress=typer.echo)
    except WorkbookError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from exc
    metrics = result.metadata["metrics"]
    typer.echo(f"model: {result.model_path}")
    typer.echo(f"version: {result.version}")
    typer.echo(f"train RMSE: {metrics['train_rmse']:.4f}  val RMSE: {metrics['val_rmse']:.4f}")


@app.command()
def serve(
    model: Path | None = typer.Option(
        None, help="Model file (default: newest taxi-duration-v*.pkl in $WORKBOOK_HOME/models)."),
    port: int = typer.Option(8000, help="TCP port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    workers: int = typer.Option(2, help="gunicorn worker processes."),
    access_log: bool = typer.Option(False, help="Log every request to stderr."),
) -> None:
    """Serve a model with gunicorn: POST /predict, GET /health, /metrics and /openapi.yaml."""
    from functools import partial

    from level2_devops.model_store import latest_model
    from level2_devops.service.model_source import ModelFileSource
    from level2_devops.service.server import ServeOptions
    from level2_devops.service.server import serve as run_server
    from taxi_common.errors import WorkbookError
    from taxi_common.settings import Settings

    settings = Settings.from_env()
    try:
        path = model if model is not None else latest_model(settings.models_dir)
        run_server(ServeOptions(host=host, port=port, workers=workers, access_log=access_log),
                   settings, partial(ModelFileSource, path))
    except WorkbookError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from exc
