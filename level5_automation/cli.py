"""Commands of level5_automation, mounted as ``mlops-levels level5 …``.

Only typer and the standard library are imported here; the loop's libraries (scikit-learn,
MLflow, Evidently, SQLAlchemy) are imported inside the commands. Errors a user can cause end in
one line (``error: …``, exit code 2).

``level5 run`` runs the loop's Prefect flows (:mod:`level5_automation.flows`) on a real Prefect
server (:mod:`level5_automation.run`); Prefect is imported inside it, after the environment is
prepared.
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
        resumed = _resume(settings, event, decision, note)
        flush_prefect_events()
    if resumed:
        then = (f"resumed the paused flow run {', '.join(resumed)}: it "
                + ("promotes it now" if decision == "approve" else "ends; the champion stays"))
    else:
        then = ("the loop promotes it at its next tick" if decision == "approve"
                else "the champion stays")
    typer.echo(f"{event.line()}\n{then}")


def _resume(settings: Any, event: Any, decision: str, note: str) -> list[str]:
    """Resume the Prefect flow runs paused on this version (``level5 run``'s approvals); the
    answer is in the events table already, so a Prefect that does not answer is a warning."""
    from level5_automation.run import resume_paused

    try:
        return resume_paused(settings, str(event.version), decision,
                             by=event.details.get("by", ""), note=note)
    except Exception as exc:  # noqa: BLE001 - the events table has the answer: the loop acts
        typer.secho(f"warning: could not resume a paused flow run ({type(exc).__name__}: "
                    f"{exc}); the loop acts on the answer at its next tick", err=True,
                    fg=typer.colors.YELLOW)
        return []


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


@app.command()
def run(
    policy: Path | None = typer.Option(None, help="Policy TOML (default: the shipped one)."),
    work_pool: str | None = typer.Option(None, "--work-pool", help="Team mode: deploy to this "
                                         "process work pool (created if missing), run by "
                                         "`prefect worker start --pool NAME`."),
    once: bool = typer.Option(False, "--once", help="One tick now, then exit (team mode: "
                              "through the pool's worker and the automation)."),
    day: str | None = typer.Option(None, help="The tick's day, YYYY-MM-DD (default: today)."),
    labelled_through: str | None = typer.Option(None, help="The day to monitor: actuals known "
                                                "through it (default: the latest day with "
                                                "actuals)."),
    cron: str = typer.Option("0 6 * * *", help="When the monitor deployment runs (not with "
                             "--once)."),
    approval_poll: int = typer.Option(10, help="Seconds between a paused run's checks for an "
                                      "answer (approval = \"required\")."),
    wait: float = typer.Option(600, help="Team mode --once: seconds to wait for the flow runs."),
) -> None:
    """The loop on a real Prefect server (PREFECT_API_URL, or the background server under
    WORKBOOK_HOME, started if none runs): monitor → decide → retrain → evaluate → promote or
    reject → watch → roll back, every decision an event."""
    with _one_line_errors():
        from level5_automation.events import flush_prefect_events, format_events, workbook_id
        from level5_automation.policy import load_policy
        from level5_automation.run import choose_server, prepare
        from taxi_common.errors import BadInputError

        load_policy(policy)  # a wrong policy is one line, before anything runs
        policy_path = str(policy.resolve()) if policy is not None else None
        _date(day, "--day"), _date(labelled_through, "--labelled-through")
        if approval_poll < 1:
            raise BadInputError(f"--approval-poll {approval_poll}: at least 1 second")
        settings = _settings()
        workbook = workbook_id(settings)  # a wrong WORKBOOK_ID is one line, before anything
        _engine(settings).dispose()  # the database answers (or one line)
        settings = prepare(settings, choose_server(
            settings, echo=lambda line: typer.echo(line, err=True)))
        typer.echo(f"Prefect API: {settings.prefect_api_url}; workbook id {workbook}", err=True)
        if once and work_pool is None:
            from level5_automation.run import run_once_embedded

            with _quiet_libraries(False):
                out = run_once_embedded(settings, policy_path, today=day,
                                        labelled_through=labelled_through,
                                        poll_seconds=approval_poll)
            flush_prefect_events()
            typer.echo(f"{out['day']}: monitored {out['monitored_day']}; {out['reason']}; "
                       f"champion v{out['champion']}")
            _echo_events(out["events"])
            return
        if once:
            from level5_automation.run import run_once_team

            summary = run_once_team(settings, policy_path, work_pool, today=day,
                                    labelled_through=labelled_through,
                                    poll_seconds=approval_poll, wait_seconds=wait)
            for r in summary.flow_runs:
                typer.echo(f"flow run {r['name']} ({r['flow']}): {r['state']}")
            typer.echo(format_events(summary.events) if summary.events else "no events")
            if summary.waiting:
                typer.echo(f"v{summary.waiting} waits for approval in a paused flow run: "
                           f"mlops-levels level5 approve {summary.waiting} (or reject)")
            return
        if work_pool is not None:
            from level5_automation.run import deploy

            ids = deploy(settings, policy_path, work_pool, cron=cron)
            typer.echo(f"deployed level5-monitor/taxi-duration-{workbook} ({cron}) and "
                       f"level5-retrain/taxi-duration-{workbook} (started by the automation "
                       f"on this workbook's level5.alert) to work pool {work_pool}: "
                       f"{ids['monitor']}, "
                       f"{ids['retrain']}\nstart a worker: PREFECT_API_URL="
                       f"{settings.prefect_api_url} prefect worker start --pool {work_pool}")
            return
        from level5_automation.run import serve

        typer.echo(f"serving level5-monitor/taxi-duration-{workbook} ({cron}) and "
                   f"level5-retrain/taxi-duration-{workbook} (automation) in this process; "
                   "Ctrl-C stops", err=True)
        serve(settings, policy_path, cron=cron)


def _echo_events(found: list[dict[str, Any]]) -> None:
    if not found:
        typer.echo("no events")
        return
    for e in found:
        version = f"v{e['version']}" if e["version"] else "-"
        typer.echo(f"{e['date']}  {e['kind']:<8}  {version:<4}  {e['reason']}")
