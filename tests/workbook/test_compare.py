"""`mlops-levels compare`: the same simulated period operated the way of each level.

The long tests run the real machinery (level 4's service and monitoring, level 3's registry,
level 5's loop) over short periods; the figures they assert are the comparison's claims, not
constants: level 5 recovers better than levels 1 and 2 without a person, level 1's model cannot
be traced, and nothing retrains for drift when there is none.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taxi_common.errors import BadInputError
from taxi_common.settings import Settings
from tests.browser import open_page, screenshot_path
from workbook.cli import app
from workbook.compare import (
    CAPABILITIES,
    Assumptions,
    CompareConfig,
    _code_lines,
    extra_dependencies,
    level_policy,
    lines_of_code,
    recovery_days,
)


def by_level(report: dict) -> dict[int, dict]:
    return {entry["level"]: entry for entry in report["levels"]}


@pytest.mark.slow
def test_congestion_through_the_command_and_the_report_in_a_browser(compare_home: Path) -> None:
    out = compare_home.parent / "compare.json"
    result = CliRunner().invoke(app, [
        "compare", "--days", "36", "--onset", "2021-01-11", "--rows-per-day", "1500",
        "--assume", "review_minutes=25", "--assume", "complaint_after_days=8",
        "--json", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    levels = by_level(report)
    assert sorted(levels) == [1, 2, 3, 4, 5]

    # The assumptions printed are the ones used: the changed ones and the defaults.
    assert "  review_minutes = 25" in result.output
    assert "  complaint_after_days = 8" in result.output
    assert "  notebook_minutes = 90" in result.output
    assert report["assumptions"]["review_minutes"] == 25
    assert report["assumptions"]["complaint_after_days"] == 8
    assert levels[3]["human_minutes"] == 25 * levels[3]["human_steps"] > 0
    assert levels[1]["human_minutes"] == (90 + 30) * levels[1]["human_steps"] // 2

    # The same first champion and the same days before the onset, whatever the level.
    before = {n: e["mean_rmse_before_onset"] for n, e in levels.items()}
    assert len(set(before.values())) == 1, before
    # Level 5 does better after the onset than the levels where a person must notice, and no
    # person takes a step; levels 1 and 2 retrained only after the complaint.
    after = {n: e["mean_rmse_after_onset"] for n, e in levels.items()}
    assert after[5] < after[1] and after[5] < after[2], after
    assert levels[5]["human_steps"] == 0 and levels[5]["human_minutes"] == 0
    assert levels[5]["retrains"] >= 1 and levels[5]["promotions"] >= 1
    complaint = dt.date(2021, 1, 11) + dt.timedelta(days=8)
    for n in (1, 2):
        manual = [e for e in levels[n]["events"] if e["kind"] == "retrain"
                  and e["details"].get("trigger") == "manual"]
        assert manual and all(dt.date.fromisoformat(e["date"]) > complaint for e in manual)
        assert levels[n]["human_steps"] == 2 * len(manual)
    for n in (3, 4, 5):
        assert levels[n]["recovery_days"] is not None
    assert levels[5]["recovery_days"] <= levels[1]["recovery_days"]

    # Lineage, looked up for real: level 1's pickle says nothing, the others recompute the
    # fingerprint of their training data and find it.
    assert levels[1]["traceable"] is False and "bare pickle" in levels[1]["lineage"]
    for n in (2, 3, 4, 5):
        assert levels[n]["traceable"] is True, levels[n]["lineage"]
        assert "matches" in levels[n]["lineage"]

    # Capabilities grow with the level; so does the cost in processes.
    counts = [sum(levels[n]["capabilities"].values()) for n in (1, 2, 3, 4, 5)]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == len(CAPABILITIES)
    assert levels[1]["cost"]["automation_compute_s"] == 0.0
    assert levels[5]["cost"]["automation_compute_s"] > 0.0
    assert len(levels[1]["daily_rmse"]) == 36

    # The terminal table has a row per level; the report links every level's outputs.
    table = result.output[result.output.index("level  RMSE before"):]
    assert [line.split()[0] for line in table.splitlines()[1:6]] == ["L1", "L2", "L3", "L4",
                                                                      "L5"]
    page = compare_home / "report" / "index.html"
    assert f"report: {page}" in result.output
    for n in (4, 5):
        assert Path(levels[n]["outputs"]["Evidently report"]).is_file()
    for entry in levels.values():
        assert Path(entry["outputs"]["timeline"]).is_file()
        assert Path(entry["outputs"]["model card"]).is_file()

    check = open_page(page.as_uri(), screenshot_path("compare-report"))
    assert check.console_errors == [] and check.page_errors == []
    assert check.failed_requests == []
    assert len(check.images) == 2 and check.broken_images == []
    assert "The five levels compared: congestion" in check.text
    timeline = open_page((page.parent / _link(page, "L5", "timeline")).resolve().as_uri())
    assert "Level 5" in timeline.title and timeline.broken_images == []


def _link(page: Path, level: str, name: str) -> str:
    """The href of the report's link ``name`` in the line of ``level``."""
    import re

    text = page.read_text()
    line = next(li for li in re.findall(r"<li>(.*?)</li>", text) if li.startswith(f"{level}:"))
    return re.search(rf"<a href='([^']+)'>{re.escape(name)}</a>", line).group(1)


def test_assumptions_parse_and_refuse_with_the_key_named() -> None:
    parsed = Assumptions.parse(["review_minutes=30", "alert-response-days=2"])
    assert parsed.review_minutes == 30 and parsed.alert_response_days == 2
    assert parsed.notebook_minutes == Assumptions().notebook_minutes
    assert "review_minutes = 30" in parsed.lines()
    for bad, words in (("nope=1", "KEY one of"), ("review_minutes", "KEY=VALUE"),
                       ("review_minutes=ten", "not a whole number"),
                       ("review_minutes=-5", "out of range"),
                       ("retrain_every_days=0", "at least 1")):
        with pytest.raises(BadInputError, match=words):
            Assumptions.parse([bad])


def test_config_refuses_unknown_levels_and_bad_periods() -> None:
    with pytest.raises(BadInputError, match="--levels"):
        CompareConfig(levels=(6,))
    with pytest.raises(BadInputError, match="--onset"):
        CompareConfig(days=10, onset=dt.date(2021, 3, 1))
    with pytest.raises(BadInputError, match="--scenario"):
        CompareConfig(scenario="earthquake")


def test_recovery_days_counts_from_the_onset_to_the_rolling_mean_back_in_the_margin() -> None:
    dates = [dt.date(2021, 1, 1) + dt.timedelta(days=i) for i in range(12)]
    onset = dates[4]
    # normal 6.0; worse from the onset; back to 6.5 from day 8 (limit 6.9 = +15 %)
    rmse = [6.0] * 4 + [8.0, 8.0, 8.0, 8.0, 6.5, 6.5, 6.5, 6.5]
    assert recovery_days(dates, rmse, onset, 0.15, 3) == 6  # dates[10]: 8, 9, 10 all 6.5
    assert recovery_days(dates, rmse, onset, 0.15, 1) == 4
    assert recovery_days(dates, [6.0] * 12, onset, 0.15, 3) == 0  # never degraded
    assert recovery_days(dates, [6.0] * 4 + [8.0] * 8, onset, 0.15, 3) is None
    assert recovery_days(dates, [None] * 4 + [8.0] * 8, onset, 0.15, 3) is None  # no "before"


def test_level_policies_are_the_levels_ways_of_operating() -> None:
    a = Assumptions(retrain_every_days=5)
    three, four, five = (level_policy(n, a) for n in (3, 4, 5))
    assert three.triggers.every_days == 5 and three.triggers.above == {}
    assert three.approval.mode == "required" and three.watch.days == 0
    assert four.triggers.every_days == 5 and four.triggers.above == {}  # alerts go to a person
    assert four.approval.mode == "auto"  # the gate decides
    assert five.approval.mode == "auto" and five.watch.days > 0
    assert three.training == four.training == five.training  # one recipe everywhere


def test_cost_figures_are_counted_from_the_code_and_the_install() -> None:
    assert _code_lines('"""Doc."""\n\n# a comment\nx = 1\n\ndef f():\n    """Doc\n    two."""\n'
                       "    return x\n") == 3
    loc = {n: lines_of_code(p) for n, p in ((2, "level2_devops"), (4, "level4_deployment"))}
    assert loc[4] > loc[2] > 100
    deps = {n: extra_dependencies(n) for n in (2, 3, 4)}
    assert deps[2]["direct"] < deps[3]["direct"] < deps[4]["direct"]
    assert deps[2]["installed"] < deps[3]["installed"] <= deps[4]["installed"]
    assert all(d["installed"] >= d["direct"] for d in deps.values())


def test_home_settings_are_not_required(tmp_path: Path) -> None:
    """The default folders sit under WORKBOOK_HOME."""
    from workbook.compare import default_home, default_report_dir

    settings = Settings(workbook_home=tmp_path)
    assert default_home(settings) == tmp_path / "compare"
    assert default_report_dir(settings) == tmp_path / "report"
