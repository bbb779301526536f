"""``mlops-levels``: the workbook's one command; each level's own commands are mounted under it.

Heavy libraries (sklearn, mlflow, prefect, evidently) are imported inside the commands that use
them, so ``mlops-levels --help`` stays fast.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

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
    levels: str = typer.Option("1,2,3,4,5", help="Which levels to run, comma-separated "
                               "(level 4 needs level 3's champion)."),
    comparison: bool = typer.Option(True, "--compare/--no-compare", help="End with the "
                                    "comparison of the five levels and its HTML report."),
    compare_days: int = typer.Option(30, help="Simulated days of the closing comparison."),
) -> None:
    """Run every level end to end on the same months, print them side by side, then compare
    the five levels over one simulated period."""
    from taxi_common.settings import Settings
    from workbook.demo import LEVELS, DemoOptions, format_results, run_comparison, run_demo

    chosen = tuple(n.strip() for n in levels.split(",") if n.strip())
    unknown = [n for n in chosen if n not in LEVELS]
    if unknown or not chosen:
        raise BadInputError(f"--levels {levels!r}: choose among {', '.join(LEVELS)}")
    options = DemoOptions(source=source, train_month=train_month, val_month=val_month,
                          n_rows=rows, compare_days=compare_days)
    settings = Settings.from_env()
    typer.echo(f"WORKBOOK_HOME={settings.workbook_home}")
    started = time.perf_counter()
    results = run_demo(options, settings, echo=typer.echo, levels=chosen)
    typer.echo("\n" + format_results(results, options))
    if comparison:
        typer.echo(run_comparison(options, settings, echo=typer.echo))
    typer.echo(f"demo took {time.perf_counter() - started:.0f} s")


@app.command()
def compare(
    scenario: str = typer.Option("congestion", help="Drift scenario: congestion, hotspot, "
                                 "data-quality, or baseline (no drift)."),
    start: str = typer.Option("2021-01-01", help="First simulated day, YYYY-MM-DD."),
    days: int = typer.Option(90, help="How many days to simulate (1-366)."),
    onset: str | None = typer.Option(None, help="Day the drift begins (default: a third of "
                                     "the way into the period)."),
    seed: int = typer.Option(0, help="Seed of the synthetic days (the same seed gives the "
                             "same comparison)."),
    strength: float = typer.Option(1.0, help="Strength of the scenario's drift."),
    rows_per_day: int = typer.Option(2000, help="Synthetic trips a day (100-20,000)."),
    levels: str = typer.Option("1,2,3,4,5", help="Which levels, comma-separated."),
    assume: list[str] = typer.Option([], "--assume", help="Change a human assumption, "
                                     "KEY=VALUE (repeatable), e.g. review_minutes=30; the "
                                     "keys and defaults are printed with the results."),
    jobs: int = typer.Option(2, min=1, max=5, help="Levels run at once, one process each."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the comparison as JSON."),
    html: bool = typer.Option(True, "--html/--no-html", help="Write the HTML report "
                              "($WORKBOOK_HOME/report/index.html)."),
    home: Path | None = typer.Option(None, help="Folder the levels run in (default "
                                     "$WORKBOOK_HOME/compare; emptied level by level)."),
) -> None:
    """Operate the same simulated period the way of each level, and compare them: daily RMSE,
    recovery after the drift, human steps and time, lineage, capabilities, cost."""
    import datetime as dt

    from taxi_common.settings import Settings
    from workbook.compare import (
        Assumptions,
        CompareConfig,
        default_home,
        default_report_dir,
        format_table,
        write_json,
    )
    from workbook.compare import compare as run_compare
    from workbook.report import write_report

    def day(text: str, option: str) -> dt.date:
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise BadInputError(f"{option} {text!r}: write a date YYYY-MM-DD") from None

    try:
        chosen = tuple(sorted({int(n) for n in levels.split(",") if n.strip()}))
    except ValueError:
        raise BadInputError(f"--levels {levels!r}: write level numbers, e.g. 1,2,5") from None
    config = CompareConfig(scenario=scenario, start=day(start, "--start"), days=days,
                           onset=day(onset, "--onset") if onset else None, seed=seed,
                           strength=strength, rows_per_day=rows_per_day, levels=chosen)
    assumptions = Assumptions.parse(assume)
    settings = Settings.from_env()
    typer.echo("assumptions (change with --assume KEY=VALUE):")
    for line in assumptions.lines():
        typer.echo(f"  {line}")
    report = run_compare(config, assumptions, home or default_home(settings),
                         base_settings=settings, jobs=jobs, progress=typer.echo)
    typer.echo("\n" + format_table(report))
    typer.echo(f"took {report['wall_s']:.0f} s")
    if json_out is not None:
        typer.echo(f"JSON: {write_json(report, json_out)}")
    if html:
        typer.echo(f"report: {write_report(report, default_report_dir(settings))}")


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
