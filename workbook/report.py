"""The comparison's HTML report: the table, the charts, links to each level's outputs.

``$WORKBOOK_HOME/report/index.html`` with two PNG charts beside it (drawn on
``matplotlib.figure.Figure``: no pyplot state, no display): the daily RMSE of every level over
the same period (the picture of the workbook), and what each level costs in people and compute.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import os
from pathlib import Path
from typing import Any

from taxi_common.files import atomic_write

#: One colour per level (colour-blind safe), the same in every chart.
COLOURS = {1: "#7f7f7f", 2: "#e69f00", 3: "#56b4e9", 4: "#cc79a7", 5: "#009e73"}
#: The legend's names of the levels' ways of operating.
SHORT = {1: "L1 notebook: retrained after complaints", 2: "L2 service: retrained by command",
         3: "L3 pipeline: schedule + approval", 4: "L4 monitoring: alert → a person",
         5: "L5 closed loop: no person"}


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def daily_rmse_png(report: dict[str, Any], *, width: float = 11.0, height: float = 4.8) -> bytes:
    """Every level's daily RMSE over the period, the onset marked; PNG bytes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    ax = figure.add_subplot()
    for entry in report["levels"]:
        dates = [dt.date.fromisoformat(d) for d in entry["dates"]]
        ax.plot(dates, [float("nan") if r is None else r for r in entry["daily_rmse"]],
                color=COLOURS[entry["level"]], lw=1.9 if entry["level"] == 5 else 1.3,
                label=SHORT[entry["level"]])
    if report["scenario"] != "baseline":
        onset = dt.date.fromisoformat(report["onset"])
        ax.axvline(onset, color="#d55e00", lw=1.0, alpha=0.7)
        ax.annotate(f"onset: {report['scenario']}", (onset, 1.0),
                    xycoords=("data", "axes fraction"), fontsize=8, color="#d55e00",
                    xytext=(3, -12), textcoords="offset points")
    ax.set_ylabel("daily RMSE (minutes)")
    ax.set_title(f"The same {report['days']} days at each level ({report['scenario']}, seed "
                 f"{report['seed']}): daily RMSE of the served predictions", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.autofmt_xdate()
    figure.tight_layout()
    return _png(figure)


def summary_png(report: dict[str, Any], *, width: float = 11.0, height: float = 3.4) -> bytes:
    """Three bar charts per level: mean RMSE after the onset, human minutes, automation
    compute seconds; PNG bytes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    axes = figure.subplots(1, 3)
    names = [f"L{e['level']}" for e in report["levels"]]
    colours = [COLOURS[e["level"]] for e in report["levels"]]
    panels = [("mean RMSE after the onset", [e["mean_rmse_after_onset"] or 0.0
                                             for e in report["levels"]]),
              ("human minutes", [e["human_minutes"] for e in report["levels"]]),
              ("automation compute (s)", [e["cost"]["automation_compute_s"]
                                          for e in report["levels"]])]
    for ax, (title, values) in zip(axes, panels, strict=True):
        ax.bar(names, values, color=colours)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        if title.startswith("mean RMSE") and any(values):
            low = min(v for v in values if v) * 0.9
            ax.set_ylim(low, max(values) * 1.02)
    figure.tight_layout()
    return _png(figure)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return html.escape(str(value))


def html_page(report: dict[str, Any], folder: Path) -> str:
    """The report page; links are relative to ``folder`` (where index.html goes)."""
    levels = report["levels"]
    rows = "".join(
        f"<tr><td>L{e['level']}</td><td>{html.escape(e['how'])}</td>"
        f"<td>{_cell(e['mean_rmse_before_onset'])}</td><td>{_cell(e['mean_rmse_after_onset'])}</td>"
        f"<td>{_cell(e['recovery_days'])}</td><td>{e['human_steps']}</td>"
        f"<td>{e['human_minutes']}</td><td>{e['retrains']}</td><td>{e['rollbacks']}</td>"
        f"<td>{_cell(e['traceable'])}</td><td>{e['cost']['n_processes']}</td>"
        f"<td>{e['cost']['automation_compute_s']:.1f}</td><td>{e['cost']['lines_of_code']}</td>"
        f"<td>{e['cost']['dependencies']['direct']} / {e['cost']['dependencies']['installed']}"
        f"</td></tr>" for e in levels)
    capabilities = list(levels[0]["capabilities"]) if levels else []
    matrix = "".join(
        f"<tr><td title='{html.escape(report['capability_notes'].get(c, ''))}'>"
        f"{html.escape(c)}</td>"
        + "".join(f"<td>{'✔' if e['capabilities'][c] else ''}</td>" for e in levels)
        + "</tr>" for c in capabilities)
    links = "".join(
        f"<li>L{e['level']}: " + ", ".join(
            f"<a href='{html.escape(_relative(path, folder))}'>{html.escape(name)}</a>"
            for name, path in e["outputs"].items()) + f"; lineage: {html.escape(e['lineage'])}</li>"
        for e in levels)
    assumptions = "".join(f"<li><code>{html.escape(k)} = {v}</code></li>"
                          for k, v in report["assumptions"].items())
    heads = "".join(f"<th>L{e['level']}</th>" for e in levels)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>mlops-levels: the five levels compared ({html.escape(report['scenario'])})</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin-bottom: 1em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>The five levels compared: {html.escape(report['scenario'])}</h1>
<p>{report['start']} + {report['days']} days, drift onset {report['onset']}, seed
{report['seed']}, about {report['rows_per_day']} trips a day; the same days, drift and first
champion for every level. Recovery: days from the onset until the
{report['recovery']['rolling_days']}-day mean RMSE is back within
{report['recovery']['margin']:.0%} of the mean before the onset.</p>
<img alt="daily RMSE of every level" src="daily_rmse.png">
<table><tr><th>level</th><th>how it is operated</th><th>RMSE before onset</th>
<th>RMSE after onset</th><th>recovery (days)</th><th>human steps</th><th>human minutes</th>
<th>retrains</th><th>rollbacks</th><th>traceable</th><th>processes</th>
<th>automation compute (s)</th><th>lines of code</th><th>dependencies direct / installed</th>
</tr>{rows}</table>
<img alt="what each level costs" src="summary.png">
<h2>Capabilities</h2>
<table><tr><th>capability</th>{heads}</tr>{matrix}</table>
<h2>Each level's outputs</h2><ul>{links}</ul>
<h2>Assumptions (the human side)</h2><ul>{assumptions}</ul>
<p>Made by <code>mlops-levels compare</code>; the data: <a href="compare.json">compare.json</a>.</p>
</body></html>
"""


def _relative(path: str, folder: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(folder).resolve())).as_posix()


def write_report(report: dict[str, Any], folder: Path) -> Path:
    """Write index.html, daily_rmse.png, summary.png and compare.json into ``folder``; the
    page's path."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (("daily_rmse.png", daily_rmse_png(report)),
                       ("summary.png", summary_png(report)),
                       ("compare.json", json.dumps(report, indent=1).encode("utf-8")),
                       ("index.html", html_page(report, folder).encode("utf-8"))):
        with atomic_write(folder / name) as (out, _tmp):
            out.write(data)
    return folder / "index.html"
