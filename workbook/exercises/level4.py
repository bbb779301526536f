"""Level 4's answers, recomputed with level 4's routing and A/B functions, and the check of its
build task (a monitoring metric).

These answers need no server: the routing is a hash, the A/B design a power calculation, and
peeking an A/A simulation on the absolute errors of a small linear model.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbook.exercises.build import CheckFailed
from workbook.exercises.context import Context

#: Exercise 2's rides: ``r-0`` … ``r-999``.
RIDES = [f"r-{i}" for i in range(1000)]
#: Exercise 3's A/A simulation: repeats (as test_ab.py; the README's 19.0 % / 5.5 % used 2,000).
PEEKING_REPEATS = 400


def variants_for_one_ride(ctx: Context) -> int:
    """2a: how many variants answer ride ``r-42`` sent 100 times at ``--ab challenger=50``."""
    from level4_deployment.routing import choose_variant

    return len({choose_variant("r-42", 0.5) for _ in range(100)})


def challenger_rides(share: float) -> int:
    """Rides of ``r-0`` … ``r-999`` that the sticky hash sends to the challenger."""
    from level4_deployment.routing import CHALLENGER, choose_variant

    return sum(choose_variant(ride, share) == CHALLENGER for ride in RIDES)


def challenger_rides_at_50(ctx: Context) -> int:
    """2b: of rides ``r-0`` … ``r-999``, those served by the challenger at ``challenger=50``."""
    return challenger_rides(0.5)


def challenger_rides_at_10(ctx: Context) -> int:
    """2c: the same at ``challenger=10``."""
    return challenger_rides(0.1)


def required_samples(ctx: Context) -> int:
    """3a: rides per variant of ``ab.design()`` (effect size d = 0.1)."""
    from level4_deployment.ab import design, required_samples

    assert design()["min_samples_per_variant"] == required_samples()
    return required_samples()


def required_samples_half_effect(ctx: Context) -> int:
    """3b: rides per variant to detect half the effect (d = 0.05)."""
    from level4_deployment.ab import required_samples

    return required_samples(effect_size=0.05)


def _peeking(ctx: Context) -> dict[str, float]:
    """A/A tests on the absolute errors of a linear model fitted on 3,000 trips of 2021-01,
    scored on 3,000 trips of 2021-02."""
    def run() -> dict[str, float]:
        from level2_devops.training import fit_model, load_prepared_month
        from level4_deployment.ab import peeking_false_positives
        from taxi_common.prepare import FEATURE_COLUMNS, TARGET

        train, val = (load_prepared_month(m, settings=ctx.settings, source=ctx.source,
                                          n_rows=3000) for m in ("2021-01", "2021-02"))
        errors = np.abs(fit_model("linear", train).predict(val[list(FEATURE_COLUMNS)])
                        - val[TARGET].to_numpy())
        return peeking_false_positives(errors, looks=10, repeats=PEEKING_REPEATS)

    return ctx.memo("peeking", run)


def peeking_percent(ctx: Context) -> float:
    """3c: A/A tests declared significant when checking 10 times, percent."""
    return 100 * _peeking(ctx)["peeking"]


def fixed_horizon_percent(ctx: Context) -> float:
    """3d: the same when checking once, at the fixed sample size, percent."""
    return 100 * _peeking(ctx)["fixed_horizon"]


# --- the build task: a bias metric ---------------------------------------------------------------

def _frames(shift: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A reference and a current day in the report's columns; the current day's predictions are
    the actual durations plus noise plus ``shift`` minutes."""
    from taxi_common.data import load_trips
    from taxi_common.prepare import prepare_trips
    from taxi_common.settings import Settings

    trips = prepare_trips(load_trips("2021-02", settings=Settings.from_env(), n_rows=3000))
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"PULocationID": trips["PULocationID"].astype("int64").astype(str),
                          "DOLocationID": trips["DOLocationID"].astype("int64").astype(str),
                          "trip_distance": trips["trip_distance"].astype(float),
                          "duration": trips["duration"].astype(float)})
    frame["prediction"] = frame["duration"] + rng.normal(0, 4, len(frame))
    reference, current = frame.iloc[:1500].reset_index(drop=True), frame.iloc[1500:].copy()
    current["prediction"] += shift
    return reference, current.reset_index(drop=True)


def _values(current: pd.DataFrame, reference: pd.DataFrame, config: Any) -> dict[str, float]:
    from level4_deployment.monitoring import build_report, snapshot_values

    snapshot = build_report(current, reference, config, day=dt.date(2021, 3, 1),
                            model_version="1")
    values = snapshot_values(snapshot)
    values["evaluated_labelled_rows"] = float(len(current))
    return values


def check_bias_metric(root: Path) -> str:
    """4a: the day's report measures ``bias`` (mean of prediction − actual, by Evidently's
    ``MeanError``), and ``[thresholds] bias`` alerts when its absolute value is above it."""
    from level4_deployment.monitoring import breaches
    from level4_deployment.monitoring_config import load_config

    config = load_config()
    threshold = getattr(config.thresholds, "bias", None)
    if threshold is None:
        raise CheckFailed("the monitoring config has no [thresholds] bias: add it to "
                          "Thresholds in monitoring_config.py and to monitoring.toml")
    day = dt.date(2021, 3, 1)
    reference, _ = _frames(0.0)
    seen = {}
    for shift in (0.0, 3.0, -3.0):
        _, current = _frames(shift)
        values = _values(current, reference, config)
        if "bias" not in values:
            raise CheckFailed("snapshot_values gives no 'bias': add Evidently's MeanError to "
                              "build_report and read it in snapshot_values")
        expected = float(np.mean(current["prediction"] - current["duration"]))
        if abs(values["bias"] - expected) > 1e-6:
            raise CheckFailed(f"bias is {values['bias']:.3f}, the mean of prediction - actual "
                              f"is {expected:.3f} (sign: positive when the model over-predicts)")
        alerted = "bias" in {a["metric"] for a in breaches(values, config, day)}
        if alerted != (abs(expected) > threshold):
            raise CheckFailed(f"a bias of {expected:+.2f} minutes against the threshold "
                              f"{threshold:g} {'alerts' if alerted else 'does not alert'}: "
                              "alert when |bias| > [thresholds] bias")
        seen[shift] = expected
    return (f"bias {seen[0.0]:+.2f}, {seen[3.0]:+.2f}, {seen[-3.0]:+.2f} minutes; alerts above "
            f"|{threshold:g}|")
