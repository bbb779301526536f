"""Commands of level1_notebooks, mounted as `mlops-levels level1 …`."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Level 1, no MLOps: the explore and train notebooks, executed with papermill.",
    no_args_is_help=True,
)


@app.callback()
def level1() -> None:
    """Level 1, no MLOps: the explore and train notebooks, executed with papermill."""


@app.command()
def run(
    source: str = typer.Option("synthetic", help="Data source: synthetic (offline) or tlc."),
    color: str = typer.Option("green", help="Taxi color: green or yellow (synthetic data is "
                              "green only)."),
    train_month: str = typer.Option("2021-01", help="Month to explore and train on, YYYY-MM."),
    val_month: str = typer.Option("2021-02", help="Month to validate on, YYYY-MM."),
    rows: int | None = typer.Option(None, help="Read at most this many trips per month."),
    output_dir: Path | None = typer.Option(
        None, help="Folder for the executed notebooks, rmse.csv and model.bin "
        "(default: WORKBOOK_HOME/reports/level1)."
    ),
) -> None:
    """Execute 01-explore.ipynb and 02-train.ipynb, then print the RMSE table."""
    from level1_notebooks.runner import default_output_dir, run_level1
    from taxi_common.settings import Settings

    settings = Settings.from_env()
    out = (output_dir or default_output_dir(settings)).resolve()
    table = run_level1(settings=settings, source=source, color=color, train_month=train_month,
                       val_month=val_month, n_rows=rows, output_dir=out, progress=True)
    typer.echo(table.to_string(index=False, float_format=lambda value: f"{value:.4f}"))
    typer.echo(f"executed notebooks, rmse.csv and model.bin in {out}")
