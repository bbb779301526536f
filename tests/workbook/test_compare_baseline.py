"""`mlops-levels compare` without drift, and for the same seed twice (apart from
``test_compare.py`` so that the test workers run them beside its congestion test)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from workbook.compare import Assumptions, CompareConfig, compare


def by_level(report: dict) -> dict[int, dict]:
    return {entry["level"]: entry for entry in report["levels"]}


@pytest.mark.slow
def test_baseline_no_level_retrains_for_drift_and_they_stay_close(compare_home: Path) -> None:
    config = CompareConfig(scenario="baseline", days=16, rows_per_day=1500)
    report = compare(config, Assumptions(), compare_home / "compare", jobs=2)
    levels = by_level(report)
    for n, entry in levels.items():
        assert entry["drift_retrains"] == 0, (n, entry["events"])
        assert entry["rollbacks"] == 0
        assert entry["recovery_days"] is None
    assert levels[1]["human_steps"] == levels[2]["human_steps"] == 0
    assert levels[4]["human_steps"] == 0 and levels[5]["human_steps"] == 0
    after = [entry["mean_rmse_after_onset"] for entry in levels.values()]
    assert max(after) - min(after) < 0.02 * min(after), after


@pytest.mark.slow
def test_compare_is_deterministic_for_a_seed_in_one_process_or_two(compare_home: Path) -> None:
    config = CompareConfig(days=14, onset=dt.date(2021, 1, 5), rows_per_day=1200, levels=(4, 5),
                           seed=3)
    one = compare(config, Assumptions(), compare_home / "one", jobs=1)
    two = compare(config, Assumptions(), compare_home / "two", jobs=2)
    for a, b in zip(one["levels"], two["levels"], strict=True):
        assert a["daily_rmse"] == b["daily_rmse"]
        assert a["events"] == b["events"]
        assert any(e["kind"] == "alert" for e in a["events"])
