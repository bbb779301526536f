"""``level5 simulate``: the timeline, the issue's JSON, the HTML page; and determinism — the
same arguments give the same events, through the command and through the Python API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from level5_automation.policy import load_policy

from .conftest import day, run_simulation

pytestmark = pytest.mark.slow

#: About 600 trips a day: judged from 300 labelled rides, on the MAE ratio, trained from 500.
SMALL_CITY = """
[triggers]
above = { mae_ratio = 1.12 }
min_labelled_rows = 300
[window]
min_rows = 500
"""


def test_the_command_writes_the_timeline_json_and_html_and_a_second_run_is_identical(
        cli: Callable[..., Any], tmp_path: Path, mlflow_cache: Path) -> None:
    policy = tmp_path / "small.toml"
    policy.write_text(SMALL_CITY)
    out_json, out_html = tmp_path / "out" / "run.json", tmp_path / "out" / "run.html"
    home = tmp_path / "workbook" / "level5" / "simulation"
    (home.parent / "cache").mkdir(parents=True)
    for cached in mlflow_cache.iterdir():  # the command finds its empty store beside its home
        (home.parent / "cache" / cached.name).write_bytes(cached.read_bytes())
    args = ["simulate", "--scenario", "congestion", "--start", "2021-01-01", "--days", "9",
            "--onset", "2021-01-04", "--seed", "3", "--rows-per-day", "600", "--policy",
            str(policy), "--json", str(out_json), "--html", str(out_html), "--quiet"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "<- onset of congestion" in result.output
    assert f"events of this run: mlops-levels level5 events --home {home}" in result.output

    data = json.loads(out_json.read_text())
    assert (data["scenario"], data["onset"], data["seed"]) == ("congestion", "2021-01-04", 3)
    assert [d["date"] for d in data["days"]][:2] == ["2021-01-01", "2021-01-02"]
    assert set(data["days"][0]) >= {"date", "rmse", "mae", "champion", "rows"}
    assert data["days"][0]["champion"] == "1" and data["days"][0]["rows"] > 400
    assert data["days"][-1]["rmse"] is None  # its actuals arrive after the end
    kinds = [e["kind"] for e in data["events"]]
    assert {"alert", "retrain"} <= set(kinds)
    assert all(set(e) >= {"date", "kind", "version", "reason"} for e in data["events"])
    page = out_html.read_text()
    assert "data:image/png;base64," in page and "onset 2021-01-04" in page

    listed = cli("events", "--home", str(home), "--json")
    assert [e["kind"] for e in json.loads(listed.output)] == kinds

    again = run_simulation(tmp_path / "again", mlflow_cache, policy=load_policy(policy),
                           scenario="congestion", start=day("2021-01-01"), days=9,
                           onset=day("2021-01-04"), seed=3, rows_per_day=600)
    assert [e.as_dict() for e in again.events] == data["events"]
    assert [d.as_dict() for d in again.days] == data["days"]


def test_bad_arguments_are_one_line(cli: Callable[..., Any], tmp_path: Path) -> None:
    for args, message in [
        (["--scenario", "rush-hour"], "--scenario 'rush-hour': use one of baseline"),
        (["--start", "2021-13-01"], "--start '2021-13-01' is not a date YYYY-MM-DD"),
        (["--days", "400"], "--days 400: simulate 1 to 366 days"),
        (["--onset", "2020-12-01"], "--onset 2020-12-01: choose a day from 2021-01-01"),
        (["--fault", "meteor@2021-01-02"], "--fault 'meteor@2021-01-02': write KIND@YYYY-MM-DD"),
        (["--reviewer", "boss"], "--reviewer 'boss': use one of none, approve, reject"),
    ]:
        result = cli("simulate", *args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), (args, lines)

    busy = tmp_path / "mine"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    result = cli("simulate", "--days", "2", "--home", str(busy))
    assert result.exit_code == 2
    assert "is not empty and was not made by a simulation" in result.output
    assert (busy / "notes.txt").exists()
