"""The Evidently workspace of the daily reports, its dashboard panels, and ``evidently ui``.

The workspace is ``$WORKBOOK_HOME/evidently``, one project (:data:`PROJECT_NAME`) whose
dashboard is set up by code when the project is created: drift share, prediction drift, MAE and
RMSE, missing-values share, rows, over days. Each monitored day adds one snapshot, timestamped
with the day; re-running a day replaces its snapshot (the day index lives beside the HTML
reports, in ``reports/monitoring/snapshots.json``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from taxi_common.files import atomic_write
from taxi_common.settings import Settings

PROJECT_NAME = "taxi-duration monitoring"
PROJECT_DESCRIPTION = ("Level 4: the champion's daily traffic against its validation month "
                       "(drift, missing values, MAE/RMSE where actuals are known).")


def workspace_dir(settings: Settings) -> Path:
    """``$WORKBOOK_HOME/evidently``."""
    return settings.workbook_home / "evidently"


def _index_path(settings: Settings) -> Path:
    return settings.reports_dir / "monitoring" / "snapshots.json"


def dashboard_panels() -> list[Any]:
    """The project's panels: what a person watching the service wants over days."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import counter_panel, line_plot_panel

    def metric(name: str, legend: str, **labels: str) -> PanelMetric:
        return PanelMetric(legend=legend, metric=f"evidently:metric_v2:{name}",
                           metric_labels=labels)

    return [
        counter_panel(title="Rows monitored (last day)", size="half", aggregation="last",
                      values=[metric("RowCount", "rows")]),
        counter_panel(title="Share of drifted columns (last day)", size="half",
                      aggregation="last",
                      values=[metric("DriftedColumnsCount", "share", value_type="share")]),
        line_plot_panel(title="Drift share: inputs and prediction", size="half",
                        values=[metric("DriftedColumnsCount", "drift share", value_type="share")]),
        line_plot_panel(title="Prediction drift (distance to the reference)", size="half",
                        values=[metric("ValueDrift", "prediction", column="prediction"),
                                metric("ValueDrift", "duration (actuals)", column="duration")]),
        line_plot_panel(title="Error where actuals are known (minutes)", size="half",
                        values=[metric("RMSE", "RMSE"), metric("MAE", "MAE", value_type="mean")]),
        line_plot_panel(title="Missing values share", size="half",
                        values=[metric("MissingValueCount", column, column=column,
                                       value_type="share")
                                for column in ("PULocationID", "DOLocationID", "trip_distance",
                                               "prediction")]),
    ]


def open_project(settings: Settings) -> tuple[Any, Any]:
    """The workspace and the monitoring project, created with its panels if it is new."""
    from evidently.ui.workspace import Workspace

    folder = workspace_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(str(folder))
    found = workspace.search_project(PROJECT_NAME)
    if found:
        return workspace, found[0]
    project = workspace.create_project(PROJECT_NAME, description=PROJECT_DESCRIPTION)
    for panel in dashboard_panels():
        project.dashboard.add_panel(panel)
    return workspace, project


def _read_index(settings: Settings) -> dict[str, str]:
    try:
        data = json.loads(_index_path(settings).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_index(settings: Settings, index: dict[str, str]) -> None:
    with atomic_write(_index_path(settings)) as (out, _tmp):
        out.write(json.dumps(index, indent=1, sort_keys=True).encode())


def add_day_snapshot(settings: Settings, snapshot: Any, day: dt.date) -> str:
    """Add a day's snapshot to the project, replacing that day's earlier one; its id."""
    workspace, project = open_project(settings)
    index = _read_index(settings)
    key = f"{project.id}/{day.isoformat()}"
    earlier = index.get(key)
    if earlier:
        try:
            workspace.delete_run(project.id, earlier)
        except (OSError, ValueError, KeyError):  # already gone: nothing to replace
            pass
    ref = workspace.add_run(project.id, snapshot, name=f"monitoring {day.isoformat()}")
    index[key] = str(ref.id)
    _write_index(settings, index)
    return str(ref.id)


def ui_command(settings: Settings, port: int, host: str = "127.0.0.1") -> list[str]:
    """The ``evidently ui`` command line for the workspace."""
    evidently = Path(sys.executable).with_name("evidently")
    return [str(evidently) if evidently.exists() else "evidently", "ui", "--workspace",
            str(workspace_dir(settings)), "--host", host, "--port", str(port)]


def ui_environment() -> dict[str, str]:
    """The UI's environment: the usage telemetry of Evidently's UI off."""
    return {**os.environ, "DO_NOT_TRACK": "1"}


def run_ui(settings: Settings, port: int) -> int:
    """Run ``evidently ui`` on 127.0.0.1 in the foreground until it stops; its exit code."""
    open_project(settings)  # the project and its panels exist before the UI shows them
    try:
        return subprocess.call(ui_command(settings, port), env=ui_environment())
    except KeyboardInterrupt:
        return 0
