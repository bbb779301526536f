"""Level 5's answers, recomputed by running level 5's own simulation, and the check of its build
task (a policy file).

The exercises' simulation is the short one of ``tests/level5/test_simulate_command.py``:
congestion from 2021-01-04 in the nine days from 2021-01-01, seed 3, about 600 trips a day, with
the "small city" policy (judged from 300 labelled rides). It is repeatable — seeded data and
sampling, scikit-learn and BLAS limited to one thread by the simulation itself — so its answers
are exact, and the same with any ``OPENBLAS_NUM_THREADS``. One run takes 25-45 s here.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from workbook.exercises.build import CheckFailed
from workbook.exercises.context import Context

#: The exercises' policy: the shipped one, for a city of about 600 trips a day.
SMALL_CITY = """\
[triggers]
above = { mae_ratio = 1.12 }
min_labelled_rows = 300

[window]
min_rows = 500
"""
#: The build task's policy file, in the working copy.
NO_CATCH_UP_FILE = Path("level5_automation") / "small_city_no_catch_up.toml"
ONSET = dt.date(2021, 1, 4)


def simulation_config() -> Any:
    """``level5 simulate --scenario congestion --start 2021-01-01 --days 9 --onset 2021-01-04
    --seed 3 --rows-per-day 600``."""
    from level5_automation.simulation import SimulationConfig

    return SimulationConfig(scenario="congestion", start=dt.date(2021, 1, 1), days=9,
                            onset=ONSET, seed=3, rows_per_day=600)


def _run(ctx: Context, policy_text: str) -> Any:
    """The simulation's result with the policy ``policy_text`` (computed once per context)."""
    def run() -> Any:
        from level5_automation.policy import parse_policy
        from level5_automation.simulation import simulate

        policy = parse_policy(tomllib.loads(policy_text), "the exercise's policy")
        with tempfile.TemporaryDirectory() as folder:
            return simulate(simulation_config(), policy, Path(folder) / "simulation",
                            base_settings=ctx.settings,
                            cache_dir=ctx.settings.workbook_home / "level5-exercise-cache")

    return ctx.memo(f"simulation:{policy_text}", run)


def _small_city(ctx: Context) -> Any:
    return _run(ctx, SMALL_CITY)


def alert_after_days(ctx: Context) -> int:
    """2a: days from the onset to the first alert event."""
    return _small_city(ctx).recovery()["alert_after_days"]


def promotion_after_days(ctx: Context) -> int:
    """2b: days from the onset to the first promotion."""
    return _small_city(ctx).recovery()["promotion_after_days"]


def retrains(ctx: Context) -> int:
    """2c: retrains after the first champion (the bootstrap is not counted)."""
    return sum(e.day >= ONSET for e in _small_city(ctx).events_of("retrain"))


def promotions(ctx: Context) -> int:
    """2d: promotions after the onset."""
    return sum(e.day >= ONSET for e in _small_city(ctx).events_of("promote"))


def _day_after_first_promotion(ctx: Context) -> Any:
    result = _small_city(ctx)
    first = min(e.day for e in result.events_of("promote") if e.day >= ONSET)
    return next(d for d in result.days if d.date == first + dt.timedelta(days=1))


def loop_rmse_after_promotion(ctx: Context) -> float:
    """2e: the loop's RMSE on the day after its first promotion (two decimals)."""
    return round(_day_after_first_promotion(ctx).rmse, 2)


def frozen_rmse_after_promotion(ctx: Context) -> float:
    """2f: the frozen first champion's RMSE on the same rides (two decimals)."""
    return round(_day_after_first_promotion(ctx).frozen_rmse, 2)


def no_catch_up_promotions(ctx: Context) -> int:
    """3b: promotions after the onset with ``catch_up_every_days = 0``."""
    text = SMALL_CITY.replace("min_labelled_rows = 300\n",
                              "min_labelled_rows = 300\ncatch_up_every_days = 0\n")
    return sum(e.day >= ONSET for e in _run(ctx, text).events_of("promote"))


def check_no_catch_up_policy(root: Path) -> str:
    """3a: ``level5_automation/small_city_no_catch_up.toml`` is a valid policy (the student's
    ``load_policy``): the small-city policy with the catch-up retrains turned off."""
    from level5_automation.policy import load_policy, parse_policy

    path = Path(root) / NO_CATCH_UP_FILE
    if not path.exists():
        raise CheckFailed(f"no policy file {NO_CATCH_UP_FILE}: write it (start from the "
                          "small-city policy in EXERCISES.md)")
    policy = load_policy(path)
    small = parse_policy(tomllib.loads(SMALL_CITY))
    if policy.triggers.catch_up_every_days != 0:
        raise CheckFailed(f"catch_up_every_days is {policy.triggers.catch_up_every_days}: 0 "
                          "turns the catch-up retrains off")
    differs = [f"{section}.{key}" for section in ("triggers", "window", "training", "promotion",
                                                  "watch", "approval")
               for key in getattr(small, section).__struct_fields__
               if (section, key) != ("triggers", "catch_up_every_days")
               and getattr(getattr(policy, section), key) != getattr(getattr(small, section), key)]
    if differs:
        raise CheckFailed(f"the policy changes {', '.join(differs)} too: change only "
                          "catch_up_every_days")
    return f"{NO_CATCH_UP_FILE}: the small-city policy without catch-up retrains"
