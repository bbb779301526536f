"""Commands of level5_automation, mounted as ``mlops-levels level5 …``.

Only typer and the standard library are imported here; the loop's libraries (scikit-learn,
MLflow, Evidently, SQLAlchemy) are imported inside the commands. Errors a user can cause end in
one line (``error: …``, exit code 2).

Not built yet: ``level5 run`` (the loop on a Prefect server: deployments, a process work pool,
an automation on the monitor's drift event, approval through ``pause_flow_run``). The steps it
will wrap are the plain functions of :mod:`level5_automation.loop`; see the README.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Level 5, full automation: monitoring triggers retraining, a policy "
                  "promotes and rolls back; simulate it day by day on a virtual clock.",
                  no_args_is_help=True)
policy_app = typer.Typer(help="The loop's policy (a TOML file).", no_args_is_help=True)
app.add_typer(policy_app, name="policy")

HOME_HELP = ("Workbook folder whose events to use (default: WORKBOOK_HOME; a simulation's "
             "folder, e.g. $WORKBOOK_HOME/level5/simulation, for its events).")


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """A user's error ends in ``error: …`` on stderr and exit code 2, never a traceback."""
    from taxi_common.errors import WorkbookError

    try:
        yield
    except WorkbookError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None


def _settings(home: Path | None = None) -> Any:
    from taxi_common.settings import Settings

    settings = Settings.from_env()
    return settings.with_home(home) if home is not None else settings


def _engine(settings: Any) -> Any:
    from sqlalchemy.exc import OperationalError

    from level4_deployment.store import engine_for
    from level5_automation.events import create_events_table
    from taxi_common.errors import WorkbookError

    engine = engine_for(settings)
    try:
        create_events_table(engine)
    except OperationalError as exc:
        raise WorkbookError(f"the level-4/5 database does not answer ({str(exc.orig).strip()}): "
                            "check DATABASE_URL") from None
    return engine


def _date(text: str | None, option: str) -> dt.date | None:
    from taxi_common.errors import BadInputError

    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise BadInputError(f"{option} {text!r} is not a date YYYY-MM-DD") from None


def default_simulation_home(settings: Any) -> Path:
    """Where ``simulate`` works by default (emptied at every run)."""
    return Path(settings.workbook_home) / "level5" / "simulation"


@policy_app.command("check")
def policy_check(
    file: Path | None = typer.Argument(None, help="The policy TOML (default: the shipped one)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole policy as JSON."),
) -> None:
    """Validate a policy file; print what it says (every key, with defaults filled in)."""
    with _one_line_errors():
        from level5_automation.policy import default_policy_path, describe, load_policy

        policy = load_policy(file)
    if as_json:
        typer.echo(json.dumps(policy.to_dict(), indent=2))
        return
    typer.echo(f"policy {file or default_policy_path()} is valid:")
    for line in describe(policy):
        typer.echo(f"  {line}")


@contextlib.contextmanager
def _quiet_libraries(verbose: bool) -> Iterator[None]:
    """MLflow's evaluation logs a few INFO lines and a SHAP warning per model, and every event
    and alert is logged too: the timeline shows them all, so only errors are printed (all of
    the loop's log with ``--verbose``). The levels are restored afterwards."""
    names = ["mlflow", "alembic"] + ([] if verbose else ["level4_deployment",
                                                         "level5_automation"])
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@app.command()
def simulate(
    scenario: str = typer.Option("congestion", help="Drift scenario: baseline, congestion, "
                                 "hotspot or data-quality."),
    start: str = typer.Option("2021-01-01", help="First simulated day, YYYY-MM-DD."),
    days: int = typer.Option(90, help="How many days to simulate."),
    onset: str | None = typer.Option(None, help="Day the scenario begins (default: a third "
                                     "of the way into the period)."),
    seed: int = typer.Option(0, help="Seed of the synthetic trips (and of the models)."),
    strength: float = typer.Option(1.0, help="Scenario strength (0 none, 1 calibrated)."),
    policy: Path | None = typer.Option(None, help="Policy TOML (default: the shipped one)."),
    rows_per_day: int = typer.Option(2000, help="About this many trips a day."),
    actuals_delay: int = typer.Option(1, help="Days until a trip's actual duration arrives."),
    reviewer: str = typer.Option("none", help="With approval = \"required\": a scripted person "
                                 "who answers pending promotions: none, approve or reject."),
    review_delay: int = typer.Option(1, help="Days the reviewer takes to answer."),
    fault: list[str] = typer.Option([], help="Inject a failure: KIND@YYYY-MM-DD with KIND "
                                    "retrain-error, worse-challenger, tracking-down or "
                                    "bad-promotion (repeatable)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write days and events as JSON."),
    html_out: Path | None = typer.Option(None, "--html", help="Write the HTML page with the "
                                         "daily RMSE chart."),
    home: Path | None = typer.Option(None, help="The simulation's own workbook folder, emptied "
                                     "at every run (default: $WORKBOOK_HOME/level5/simulation)."),
    monitoring_config: Path | None = typer.Option(None, help="Level 4's monitoring TOML "
                                                  "(default: the shipped one)."),
    threads: int = typer.Option(1, help="Threads for scikit-learn and BLAS (1: repeatable)."),
    quiet: bool = typer.Option(False, help="No line per day while it runs."),
    verbose: bool = typer.Option(False, help="Print the loop's log (events, alerts, steps)."),
) -> None:
    """Replay synthetic days through the level-4 service and the level-5 loop on a virtual
    clock; print the timeline (and write it as JSON and HTML)."""
    with _one_line_errors():
        from level4_deployment.monitoring_config import load_config
        from level5_automation.events import flush_prefect_events
        from level5_automation.policy import load_policy
        from level5_automation.simulation import Fault, SimulationConfig
        from level5_automation.simulation import simulate as run
        from taxi_common.errors import BadInputError

        if threads < 1:
            raise BadInputError(f"--threads {threads}: at least 1")
        config = SimulationConfig(
            scenario=scenario, start=_date(start, "--start"), days=days,
            onset=_date(onset, "--onset"), seed=seed, strength=strength,
            rows_per_day=rows_per_day, actuals_delay_days=actuals_delay, reviewer=reviewer,
            review_delay_days=review_delay, faults=tuple(Fault.parse(f) for f in fault),
            threads=threads)
        chosen = load_policy(policy)
        monitoring = load_config(monitoring_config)
        settings = _settings()
        folder = home or default_simulation_home(settings)
        typer.echo(f"simulating {config.days} days of {config.scenario} from {config.start} "
                   f"(onset {config.drift_onset}) in {folder}", err=True)
        with _quiet_libraries(verbose):
            result = run(config, chosen, folder, base_settings=settings, monitoring=monitoring,
                         progress=None if quiet else (lambda line: typer.echo(line, err=True)))
        flush_prefect_events()
    typer.echo(result.timeline())
    typer.echo("")
    from level5_automation.events import format_events

    typer.echo(format_events(result.events))
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(result.timings.items(),
                                                           key=lambda kv: -kv[1]))
    typer.echo(f"\ntime: {timings}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
        typer.echo(f"JSON: {json_out}")
    if html_out is not None:
        from level5_automation.report import write_html

        typer.echo(f"HTML: {write_html(result, html_out)}")
    typer.echo(f"events of this run: mlops-levels level5 events --home {result.home}")


@app.command()
def events(
    as_json: bool = typer.Option(False, "--json", help="Print the events as JSON."),
    home: Path | None = typer.Option(None, help=HOME_HELP),
    kind: list[str] = typer.Option([], help="Only these kinds (repeatable)."),
    since: str | None = typer.Option(None, help="From this day, YYYY-MM-DD."),
    until: str | None = typer.Option(None, help="Through this day, YYYY-MM-DD."),
) -> None:
    """The loop's decisions, oldest first, each with its reason."""
    with _one_line_errors():
        from level5_automation.events import KINDS, format_events, read_events
        from taxi_common.errors import BadInputError

        unknown = [k for k in kind if k not in KINDS]
        if unknown:
            raise BadInputError(f"--kind {unknown[0]!r}: use one of {', '.join(KINDS)}")
        engine = _engine(_settings(home))
        found = read_events(engine, since=_date(since, "--since"), until=_date(until, "--until"),
                            kinds=kind or None)
    if as_json:
        typer.echo(json.dumps([e.as_dict() for e in found], indent=2))
    elif found:
        typer.echo(format_events(found))
    else:
        typer.echo("no events recorded yet")


def _review(version: str, decision: str, home: Path | None, note: str, day: str | None) -> None:
    with _one_line_errors():
        from level5_automation.events import flush_prefect_events, review

        settings = _settings(home)
        event = review(_engine(settings), version, decision, day=_date(day, "--day"),
                       note=note, settings=settings)
        flush_prefect_events()
    then = ("the loop promotes it at its next tick" if decision == "approve"
            else "the champion stays")
    typer.echo(f"{event.line()}\n{then}")


@app.command()
def approve(
    version: str = typer.Argument(..., help="The pending version, e.g. 3."),
    home: Path | None = typer.Option(None, help=HOME_HELP),
    note: str = typer.Option("", help="Why (kept in the event)."),
    day: str | None = typer.Option(None, help="The loop's day of the answer (a simulation's "
                                   "virtual day; default today)."),
) -> None:
    """Approve a promotion that waits for a person (approval = "required")."""
    _review(version, "approve", home, note, day)


@app.command()
def reject(
    version: str = typer.Argument(..., help="The pending version, e.g. 3."),
    home: Path | None = typer.Option(None, help=HOME_HELP),
    note: str = typer.Option("", help="Why (kept in the event)."),
    day: str | None = typer.Option(None, help="The loop's day of the answer (a simulation's "
                                   "virtual day; default today)."),
) -> None:
    """Reject a promotion that waits for a person: the champion stays."""
    _review(version, "reject", home, note, day)
