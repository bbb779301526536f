"""The simulation's HTML page: the daily RMSE with the onset and every decision marked.

One self-contained file: a matplotlib chart embedded as a base64 PNG (drawn on a
``matplotlib.figure.Figure``, so no pyplot state and no display are involved), the events with
their reasons, and the days.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from pathlib import Path

from level5_automation.policy import describe
from level5_automation.simulation import SimulationResult
from taxi_common.files import atomic_write

#: How each kind of event is drawn: colour, marker, label.
MARKS = {
    "alert": ("#e69f00", "v", "alert"),
    "retrain": ("#56b4e9", "o", "retrain"),
    "promote": ("#009e73", "^", "promotion"),
    "reject": ("#7f7f7f", "x", "rejected"),
    "pending": ("#cc79a7", "s", "waiting for approval"),
    "rollback": ("#d55e00", "X", "rollback"),
    "error": ("#000000", "*", "error"),
}


LOOP_LABEL = "level 5: the loop's champion"


def rmse_chart_png(result: SimulationResult, *, width: float = 11.0,
                   height: float = 4.8, label: str = LOOP_LABEL) -> bytes:
    """The daily RMSE of the loop's champion and of the frozen first champion, the onset, and
    the events as markers (promotions and rollbacks also as vertical lines); PNG bytes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    ax = figure.add_subplot()
    days = [d.date for d in result.days]
    ax.plot(days, [d.rmse for d in result.days], color="#0072b2", lw=1.8,
            label=label)
    ax.plot(days, [d.frozen_rmse for d in result.days], color="#7f7f7f", lw=1.2, ls="--",
            label="frozen first champion (no loop)")
    values = [v for d in result.days for v in (d.rmse, d.frozen_rmse) if v is not None]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    span = max(high - low, 0.5)
    top, bottom = high + 0.12 * span, low - 0.12 * span
    onset = result.config.drift_onset
    if result.config.scenario != "baseline":
        ax.axvline(onset, color="#d55e00", lw=1.0, alpha=0.6)
        ax.annotate(f"onset: {result.config.scenario}", (onset, top), fontsize=8,
                    color="#d55e00", xytext=(3, -10), textcoords="offset points")
    levels = {"alert": top, "retrain": bottom, "reject": bottom, "error": bottom,
              "pending": top - 0.06 * span}
    for kind, (colour, marker, label) in MARKS.items():
        events = result.events_of(kind)
        if not events:
            continue
        if kind in ("promote", "rollback"):
            for event in events:
                ax.axvline(event.day, color=colour, lw=1.0, ls=":", alpha=0.8)
                ax.annotate(f"v{event.version}", (event.day, top - 0.12 * span), fontsize=7,
                            color=colour, xytext=(2, 0), textcoords="offset points")
            ax.scatter([e.day for e in events], [top - 0.16 * span] * len(events), color=colour,
                       marker=marker, s=36, label=label, zorder=3)
            continue
        ax.scatter([e.day for e in events], [levels[kind]] * len(events), color=colour,
                   marker=marker, s=30, label=label, zorder=3)
    ax.set_ylim(bottom - 0.08 * span, top + 0.08 * span)
    ax.set_ylabel("daily RMSE (minutes)")
    ax.set_title(f"{result.config.scenario}, seed {result.config.seed}: daily RMSE of the "
                 "served predictions once their actuals arrived", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def html_page(result: SimulationResult, *, title: str = "Level 5 simulation",
              label: str = LOOP_LABEL) -> str:
    """The whole page as a string (``title`` and the chart's ``label`` name who operated the
    model: another level's way of operating in ``mlops-levels compare``)."""
    c = result.config
    png = base64.b64encode(rmse_chart_png(result, label=label)).decode("ascii")
    policy = "".join(f"<li>{html.escape(line)}</li>" for line in describe(result.policy))
    events = "".join(
        f"<tr><td>{e.day.isoformat()}</td><td class='{e.kind}'>{e.kind}</td>"
        f"<td>{_cell('v' + e.version if e.version else None)}</td>"
        f"<td>{html.escape(e.reason)}</td></tr>" for e in result.events)
    days = "".join(
        f"<tr><td>{d.date.isoformat()}</td><td>{d.rows}</td><td>v{_cell(d.champion)}</td>"
        f"<td>{_cell(d.rmse)}</td><td>{_cell(d.frozen_rmse)}</td><td>{_cell(d.mae)}</td>"
        f"<td>{_cell(d.frozen_mae)}</td></tr>" for d in result.days)
    faults = ", ".join(f"{f.kind}@{f.day}" for f in c.faults) or "none"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}: {html.escape(c.scenario)} from {c.start}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: left; }}
.promote {{ color: #009e73; }} .rollback {{ color: #d55e00; }} .alert {{ color: #b07800; }}
.reject {{ color: #7f7f7f; }} .error {{ color: #000; font-weight: bold; }}
.pending {{ color: #cc79a7; }}
</style></head><body>
<h1>{html.escape(title)}: {html.escape(c.scenario)}</h1>
<p>{c.start} to {c.end} ({c.days} days), onset {c.drift_onset}, strength {c.strength:g},
seed {c.seed}, about {c.rows_per_day} trips a day, actuals {c.actuals_delay_days} day(s) late,
reviewer: {html.escape(c.reviewer)}, faults: {html.escape(faults)}.</p>
<img alt="daily RMSE" src="data:image/png;base64,{png}">
<h2>Policy</h2><ul>{policy}</ul>
<h2>Events ({len(result.events)})</h2>
<table><tr><th>date</th><th>kind</th><th>version</th><th>reason</th></tr>{events}</table>
<h2>Days</h2>
<table><tr><th>date</th><th>rides</th><th>champion</th><th>RMSE</th><th>frozen RMSE</th>
<th>MAE</th><th>frozen MAE</th></tr>{days}</table>
<p>Made by <code>mlops-levels level5 simulate</code> on {dt.date.today()}.</p>
</body></html>
"""


def write_html(result: SimulationResult, path: Path, *, title: str = "Level 5 simulation",
               label: str = LOOP_LABEL) -> Path:
    """Write the page to ``path`` (atomically)."""
    with atomic_write(Path(path)) as (out, _tmp):
        out.write(html_page(result, title=title, label=label).encode("utf-8"))
    return Path(path)
