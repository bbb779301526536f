"""The level-1 recipe as small functions: load and prepare a month, fit a model, evaluate it.

Level 3's pipeline calls the same functions, so the two levels train the same thing.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from level2_devops.models import build_model
from taxi_common.data import load_trips
from taxi_common.metrics import mae, rmse
from taxi_common.prepare import FEATURE_COLUMNS, TARGET, prepare_trips
from taxi_common.scenarios import Scenario
from taxi_common.settings import Settings


def load_prepared_month(
    month: str,
    *,
    settings: Settings,
    source: str = "synthetic",
    color: str = "green",
    n_rows: int | None = None,
    seed: int = 0,
    scenario: Scenario | str = "baseline",
) -> pd.DataFrame:
    """Raw trips of ``month`` (see :func:`taxi_common.data.load_trips`), prepared for training."""
    raw = load_trips(month, settings=settings, source=source, color=color, n_rows=n_rows,
                     seed=seed, scenario=scenario)
    return prepare_trips(raw, color)


def data_fingerprint(df: pd.DataFrame) -> str:
    """A short, stable hash of the rows a model sees (feature columns and target, in order)."""
    digest = hashlib.sha256()
    for name in (*FEATURE_COLUMNS, TARGET):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(np.asarray(df[name], dtype=np.float64)).tobytes())
    return digest.hexdigest()[:16]


def fit_model(name: str, train: pd.DataFrame, params: dict[str, Any] | None = None) -> Pipeline:
    """Build model ``name`` from the catalogue and fit it on prepared trips."""
    pipeline = build_model(name, params)
    return pipeline.fit(train[list(FEATURE_COLUMNS)], train[TARGET].to_numpy())


def evaluate(pipeline: Pipeline, df: pd.DataFrame) -> dict[str, float]:
    """RMSE and MAE, in minutes, of ``pipeline`` on prepared trips."""
    predicted = pipeline.predict(df[list(FEATURE_COLUMNS)])
    return {"rmse": rmse(df[TARGET], predicted), "mae": mae(df[TARGET], predicted)}
