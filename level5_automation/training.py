"""Retraining on a window of labelled traffic: level 2's models, level 3's search, tracking and
registry.

Why not level 3's ``run_training``: its :class:`~level3_training.pipeline.TrainConfig` names whole
months that it regenerates or downloads, while level 5 learns from the traffic the service
actually served and whose actuals came in — days, read from level 4's tables — and a window
that must stop at a change point in the middle of a month. So the challenger is fitted here with
the same parts: level 2's model catalogue (:func:`level2_devops.models.build_model`), level 3's
seeded random search (:func:`level3_training.search.sample_trials`), logged to MLflow with level
3's client-bound logging (:func:`level3_training.tracking.log_pipeline_model`, signature and
pinned requirements included) and registered as ``@challenger`` by level 3's all-or-nothing
:func:`level3_training.registry.register_version`. It also skips a Prefect flow run per retrain
(about 1.1 s of fixed overhead each, see STACK.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from level5_automation.policy import Training
from taxi_common.prepare import FEATURE_COLUMNS, MAX_MINUTES, MIN_MINUTES, TARGET
from taxi_common.settings import Settings

EXPERIMENT = "taxi-duration-level5"
LABELLED_COLUMNS = ("ride_id", "pickup_datetime", *FEATURE_COLUMNS, TARGET, "prediction",
                    "model_version")


@dataclass(frozen=True)
class DayWindow:
    """Days ``first`` to ``last``, both included."""

    first: dt.date
    last: dt.date

    @property
    def days(self) -> int:
        """How many days the window spans."""
        return (self.last - self.first).days + 1

    def label(self) -> str:
        """``2021-02-01..2021-02-14``."""
        return f"{self.first.isoformat()}..{self.last.isoformat()}"

    def as_list(self) -> list[str]:
        """``["2021-02-01", "2021-02-14"]`` (for JSON)."""
        return [self.first.isoformat(), self.last.isoformat()]


def labelled_rows(engine: Engine, window: DayWindow) -> pd.DataFrame:
    """The served rides picked up in ``window`` whose actual duration is known and lies in
    the training recipe's 1-60 minutes (an actual outside it is an outlier, as in every
    level's training data): the inputs, the duration, the served prediction and version; one
    row per ride (a ride logged twice counts once), in pickup order."""
    from level4_deployment.store import joined_predictions

    start = dt.datetime.combine(window.first, dt.time())
    end = dt.datetime.combine(window.last + dt.timedelta(days=1), dt.time())
    frame = joined_predictions(engine, start, end, by="pickup")
    frame = frame.drop_duplicates("ride_id", keep="first")
    frame = frame[pd.to_numeric(frame[TARGET], errors="coerce").between(MIN_MINUTES,
                                                                         MAX_MINUTES)]
    frame = frame.sort_values(["pickup_datetime", "ride_id"], kind="stable")
    out = frame[list(LABELLED_COLUMNS)].reset_index(drop=True)
    return out.astype({"PULocationID": "int64", "DOLocationID": "int64",
                       "trip_distance": "float64", TARGET: "float64"})


def count_labelled(engine: Engine, window: DayWindow) -> int:
    """How many rides picked up in ``window`` have an actual of 1-60 minutes (one small
    query; :func:`labelled_rows` keeps the same ones)."""
    from sqlalchemy import func, select

    from level4_deployment.store import actuals

    start = dt.datetime.combine(window.first, dt.time())
    end = dt.datetime.combine(window.last + dt.timedelta(days=1), dt.time())
    query = select(func.count()).select_from(actuals).where(
        actuals.c.pickup_datetime >= start, actuals.c.pickup_datetime < end,
        actuals.c.duration.between(MIN_MINUTES, MAX_MINUTES))
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


@dataclass
class FittedChallenger:
    """A fitted pipeline and how it was chosen."""

    pipeline: Any
    model: str
    params: dict[str, Any]
    train_rows: int
    candidates: list[dict[str, Any]] = field(default_factory=list)


def candidate_params(training: Training) -> list[tuple[str, dict[str, Any]]]:
    """``(model, parameters)`` of every candidate: level 3's seeded search per model, each
    trial over the policy's parameters for that model."""
    from level3_training.search import sample_trials

    out = []
    for name in training.models:
        base = dict(training.params.get(name, {}))
        for trial in sample_trials(name, training.trials, training.seed):
            out.append((name, {**base, **trial}))
    return out


def _fit(name: str, params: dict[str, Any], rows: pd.DataFrame) -> Any:
    from level2_devops.training import fit_model

    return fit_model(name, rows, params)


def _rmse(pipeline: Any, rows: pd.DataFrame) -> float:
    predicted = np.asarray(pipeline.predict(rows[list(FEATURE_COLUMNS)]), dtype=np.float64)
    return float(np.sqrt(np.mean((predicted - rows[TARGET].to_numpy(np.float64)) ** 2)))


def fit_challenger(train: pd.DataFrame, training: Training) -> FittedChallenger:
    """Fit the policy's candidates on ``train`` (labelled rides) and return the best.

    One candidate: fitted on every row. Several: each is fitted on all but the last day of
    ``train`` and scored on that day; the best is then refitted on every row. The holdout the
    promotion rule uses is never seen here.
    """
    candidates = candidate_params(training)
    if len(candidates) == 1:
        name, params = candidates[0]
        return FittedChallenger(_fit(name, params, train), name, params, len(train))
    last_day = train["pickup_datetime"].dt.date.max()
    is_last = (train["pickup_datetime"].dt.date == last_day).to_numpy()
    fit_rows, val_rows = train.loc[~is_last], train.loc[is_last]
    scored = []
    for name, params in candidates:
        scored.append({"model": name, "params": params,
                       "selection_rmse": _rmse(_fit(name, params, fit_rows), val_rows)})
    best = min(scored, key=lambda c: c["selection_rmse"])
    return FittedChallenger(_fit(best["model"], best["params"], train), best["model"],
                            best["params"], len(train), scored)


def register_challenger(settings: Settings, fitted: FittedChallenger, train: pd.DataFrame,
                        window: DayWindow, *, day: dt.date, trigger: str, reason: str,
                        alias: str = "challenger") -> str:
    """Log the fitted challenger to MLflow (a run of :data:`EXPERIMENT` with its parameters,
    lineage and model) and register it as ``alias``; its version number."""
    from level2_devops.training import data_fingerprint
    from level3_training.registry import client_for, register_version
    from level3_training.tracking import (
        code_version,
        configure_tracking,
        log_pipeline_model,
        log_values,
        model_input_example,
        start_run,
    )

    client = client_for(settings.tracking_uri)
    experiment_id = configure_tracking(settings, EXPERIMENT)
    tags = {"data.source": "level5-traffic", "data.window": window.label(),
            "data.train_rows": str(len(train)), "data.train_fingerprint": data_fingerprint(train),
            "code.version": code_version(), "model.name": fitted.model,
            "level5.day": day.isoformat(), "level5.trigger": trigger}
    run_id = start_run(client, experiment_id, f"level5 retrain {day.isoformat()}",
                       tags={**tags, "level5.reason": reason[:500]})
    try:
        log_values(client, run_id, params={"model": fitted.model, **fitted.params},
                   metrics={"train_rows": len(train),
                            "train_rmse": _rmse(fitted.pipeline, train)})
        logged = log_pipeline_model(client, run_id, fitted.pipeline, model_input_example(train),
                                    params={"model": fitted.model, **fitted.params})
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    description = (f"Level-5 retrain on {day.isoformat()} ({trigger}): {fitted.model} on "
                   f"{len(train)} labelled rides of {window.label()}. {reason}")
    version = register_version(client, logged.model_id, run_id, description=description,
                               tags=tags, alias=alias)
    return str(version.version)
