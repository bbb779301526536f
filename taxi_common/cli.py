"""``mlops-levels data …``: get a real TLC month into the cache, or write a synthetic one."""

from __future__ import annotations

from pathlib import Path

import typer

from taxi_common.scenarios import SCENARIOS, Scenario
from taxi_common.settings import Settings

app = typer.Typer(help="Get trip data: real TLC months (cached) or calibrated synthetic ones.",
                  no_args_is_help=True)


@app.command()
def download(
    month: str = typer.Option(..., help="Month to download, YYYY-MM (for example 2021-01)."),
    color: str = typer.Option("green", help="Taxi color: green, yellow or fhv."),
) -> None:
    """Download a real TLC month (from TLC_BASE_URL) into the cache under WORKBOOK_HOME."""
    from taxi_common.sources import download_month

    path = download_month(color, month, settings=Settings.from_env(), progress=True)
    typer.echo(str(path))


@app.command()
def synth(
    month: str = typer.Option(..., help="Month to generate, YYYY-MM."),
    out: Path = typer.Option(..., help="Parquet file to write."),
    scenario: str = typer.Option(
        "baseline", help="Drift scenario: " + "; ".join(f"{k} = {v}" for k, v in SCENARIOS.items())
    ),
    start_day: int = typer.Option(1, help="Day of the month the scenario starts (1 = all month)."),
    strength: float = typer.Option(1.0, help="Scenario strength: 0 none, 1 calibrated default."),
    rows: int | None = typer.Option(None, help="Number of trips (default: a real month's volume)."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same bytes."),
) -> None:
    """Write a synthetic month with the exact green TLC schema to a parquet file."""
    from taxi_common.synthetic import write_month

    spec = Scenario(name=scenario, start_day=start_day, strength=strength)
    path = write_month(month, out, seed=seed, scenario=spec, n_rows=rows)
    typer.echo(str(path))
