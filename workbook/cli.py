"""``mlops-levels``: the workbook's one command; each level's own commands are mounted under it.

Heavy libraries (sklearn, mlflow, prefect, evidently) are imported inside the commands that use
them, so ``mlops-levels --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

from level1_notebooks.cli import app as level1_app
from level2_devops.cli import app as level2_app
from level3_training.cli import app as level3_app
from level4_deployment.cli import app as level4_app
from level5_automation.cli import app as level5_app
from taxi_common.cli import app as data_app
from taxi_common.errors import BadInputError, WorkbookError
from workbook.exercises.cli import app as exercises_app

app = typer.Typer(
    name="mlops-levels",
    help="One taxi-duration model, rebuilt at each of the five MLOps maturity levels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_app, name="data")
app.add_typer(level1_app, name="level1")
app.add_typer(level2_app, name="level2")
app.add_typer(level3_app, name="level3")
app.add_typer(level4_app, name="level4")
app.add_typer(level5_app, name="level5")
app.add_typer(exercises_app, name="exercises")


@app.command()
def demo(
    source: str = typer.Option("synthetic", help="Data source: synthetic (offline) or tlc."),
    train_month: str = typer.Option("2021-01", help="Training month, YYYY-MM."),
    val_month: str = typer.Option("2021-02", help="Validation month, YYYY-MM."),
    rows: int | None = typer.Option(None, help="Cap the trips of each month (faster runs)."),
    levels: str = typer.Option("1,2,3", help="Which levels to run, comma-separated."),
) -> None:
    """Run every built level end to end on the same months, then print them side by side."""
    from taxi_common.settings import Settings
    from workbook.demo import LEVELS, DemoOptions, format_results, run_demo

    chosen = tuple(n.strip() for n in levels.split(",") if n.strip())
    unknown = [n for n in chosen if n not in LEVELS]
    if unknown or not chosen:
        raise BadInputError(f"--levels {levels!r}: choose among {', '.join(LEVELS)}")
    options = DemoOptions(source=source, train_month=train_month, val_month=val_month,
                          n_rows=rows)
    settings = Settings.from_env()
    typer.echo(f"WORKBOOK_HOME={settings.workbook_home}")
    results = run_demo(options, settings, echo=typer.echo, levels=chosen)
    typer.echo("\n" + format_results(results, options))


@app.command()
def ui(
    mlflow_port: int = typer.Option(5050, help="Port of MLflow's UI."),
    prefect_port: int = typer.Option(4250, help="Port of Prefect's UI."),
    evidently_port: int = typer.Option(8050, help="Port of Evidently's UI."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
) -> None:
    """MLflow's, Prefect's and Evidently's UIs over WORKBOOK_HOME, until Ctrl-C."""
    from taxi_common.settings import Settings
    from workbook.ui import UiPorts, run_uis

    run_uis(Settings.from_env(), UiPorts(mlflow_port, prefect_port, evidently_port), host,
            echo=typer.echo)


def main() -> None:
    """Console entry point: user errors end in one line on stderr and exit code 2."""
    try:
        app()
    except WorkbookError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":
    main()
