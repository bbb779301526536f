"""``monitor_flow``: the daily monitoring as a Prefect flow, one task run per day.

The logic is :func:`level4_deployment.monitoring.monitor_day` (a plain function, tested without a
server); the flow adds what orchestration gives: a run per invocation with its parameters, a
task run per day with its state and logs, and retries. Importing this module imports Prefect:
the CLI imports it inside the command, after the environment is prepared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from taxi_common.settings import Settings


def _settings(workbook_home: str | None) -> Settings:
    settings = Settings.from_env()
    return settings.with_home(Path(workbook_home)) if workbook_home else settings


@task(name="monitor-day")
def monitor_day_task(day: str, reference_path: str, config_path: str | None, by: str,
                     workbook_home: str | None) -> dict[str, Any]:
    """Monitor one day; the day's result as JSON-able data."""
    from level4_deployment.monitoring import monitor_day, parse_day
    from level4_deployment.monitoring_config import load_config
    from level4_deployment.reference import load_reference
    from level4_deployment.store import create_tables, engine_for

    settings = _settings(workbook_home)
    engine = engine_for(settings)
    try:
        create_tables(engine)
        result = monitor_day(parse_day(day), engine=engine,
                             reference=load_reference(Path(reference_path)),
                             config=load_config(Path(config_path) if config_path else None),
                             settings=settings, by=by)
    finally:
        engine.dispose()
    alerts = ", ".join(a["metric"] for a in result.alerts) or "none"
    get_run_logger().info("%s: %d rows monitored, alerts: %s", day, result.rows, alerts)
    return result.as_dict()


@flow(name="level4-monitor", log_prints=True)
def monitor_flow(reference_path: str, day: str | None = None, start: str | None = None,
                 end: str | None = None, config_path: str | None = None, by: str = "logged_at",
                 workbook_home: str | None = None) -> list[dict[str, Any]]:
    """Monitor ``day``, or every day from ``start`` to ``end`` (both included), in order."""
    from level4_deployment.monitoring import day_range, parse_day

    if day is not None:
        days = [parse_day(day)]
    elif start is not None and end is not None:
        days = day_range(parse_day(start), parse_day(end))
    else:
        from taxi_common.errors import BadInputError

        raise BadInputError("monitor needs --day DAY, or --from DAY and --to DAY")
    return [monitor_day_task(d.isoformat(), reference_path, config_path, by, workbook_home)
            for d in days]
