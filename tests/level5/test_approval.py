"""``approval = "required"``: a challenger that passes the rule waits as a ``pending`` event;
``level5 reject`` leaves the champion, ``level5 approve`` has the loop promote it at its next
tick, and the service serves it the day after."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from level5_automation.events import pending_approvals, read_events
from level5_automation.simulation import Simulation, SimulationConfig
from taxi_common.settings import Settings

from .conftest import day, policy_with

pytestmark = pytest.mark.slow

#: A city of about 1,000 trips a day: judged from 500 labelled rides, on the MAE ratio only
#: (level 4's drift thresholds need bigger days); no schedule and no catch-up, so every retrain
#: here is the drift's.
SMALL_CITY = {"triggers": {"min_labelled_rows": 500, "above": {"mae_ratio": 1.12},
                           "every_days": 0, "catch_up_every_days": 0}}


def _run_until(sim: Simulation, kind: str, limit: int = 8) -> Any:
    for _ in range(limit):
        sim.run_day()
        found = [e for e in read_events(sim.engine, kinds=[kind]) if e.version != "1"]
        if found:
            return found[-1]
    raise AssertionError(f"no {kind} event within {limit} days: "
                         f"{[e.line() for e in read_events(sim.engine)]}")


def test_nothing_is_promoted_until_approved_and_a_rejection_keeps_the_champion(
        tmp_path: Path, mlflow_cache: Path, cli: Callable[..., Any]) -> None:
    policy = policy_with(approval={"mode": "required", "timeout_days": 7}, **SMALL_CITY)
    config = SimulationConfig(scenario="congestion", start=day("2021-01-01"), days=16,
                              onset=day("2021-01-05"), rows_per_day=1000)
    sim = Simulation(config, policy, tmp_path / "sim", cache_dir=mlflow_cache,
                     base_settings=Settings(workbook_home=tmp_path))
    sim.start()
    try:
        first = _run_until(sim, "pending")
        assert "waiting for `mlops-levels level5 approve" in first.reason
        sim.run(days=2)  # nobody answers: no promotion, and no new challenger meanwhile
        assert [e.version for e in read_events(sim.engine, kinds=["promote"])] == ["1"]
        assert [e.version for e in read_events(sim.engine, kinds=["retrain"])] == \
            ["1", first.version]
        assert all(d.champion == "1" for d in sim.days)

        answer = cli("reject", first.version, "--home", str(sim.home), "--day",
                     sim.next_day.isoformat(), "--note", "not on a Friday")
        assert answer.exit_code == 0, answer.output
        second = _run_until(sim, "pending")  # the drift goes on: another challenger waits
        assert second.version != first.version
        assert [e.version for e in read_events(sim.engine, kinds=["promote"])] == ["1"]
        assert all(d.champion == "1" for d in sim.days)

        answer = cli("approve", second.version, "--home", str(sim.home), "--day",
                     sim.next_day.isoformat())
        assert answer.exit_code == 0, answer.output
        assert [p.approval is not None for p in pending_approvals(sim.engine)] == [True]
        approved_on = sim.next_day
        sim.run(days=2)
    finally:
        sim.close()
    result = sim.result()
    promote = result.events_of("promote")[-1]
    assert (promote.version, promote.day) == (second.version, approved_on)
    assert promote.details["approved"] and "approved by" in promote.reason
    assert first.version not in {e.version for e in result.events_of("promote")}
    served = {d.date: d.champion for d in result.days}
    assert served[approved_on] == "1" and served[max(served)] == second.version
    assert pending_approvals(sim.engine) == []
