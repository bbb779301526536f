"""The level-1 recipe as small functions: load and prepare a month, fit a model, evaluate it.

Level 3's pipeline calls the same functions, so the two levels train the same thing.
:func:`train_and_save` strings them together for ``mlops-levels level2 train``: it loads the
training and validation months, fits the model, scores it, and writes a versioned model file with
its metadata JSON.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from level2_devops.models import build_model, model_spec
from taxi_common.data import MonthRequest, as_month_request, check_source, load_trips
from taxi_common.errors import BadInputError
from taxi_common.metrics import mae, rmse
from taxi_common.months import next_month, parse_month
from taxi_common.prepare import FEATURE_COLUMNS, TARGET, input_columns, prepare_trips
from taxi_common.scenarios import Scenario
from taxi_common.settings import Settings

Progress = Callable[[str], None]


def load_prepared_month(
    month: str | MonthRequest,
    *,
    settings: Settings,
    source: str | None = None,
    color: str | None = None,
    n_rows: int | None = None,
    seed: int | None = None,
    scenario: Scenario | str | None = None,
) -> pd.DataFrame:
    """Raw trips of ``month`` (a :class:`~taxi_common.data.MonthRequest`, or ``YYYY-MM`` and its
    options; see :func:`taxi_common.data.load_trips`), prepared for training."""
    request = as_month_request(month, source=source, color=color, n_rows=n_rows, seed=seed,
                               scenario=scenario)
    return prepare_trips(load_trips(request, settings=settings), request.color)


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


# --- parameters given on the command line -------------------------------------------------------

def parse_value(text: str) -> Any:
    """A command-line value with its natural type: ``true``/``false`` -> bool, ``none``/``null``
    -> None, then int, then float; anything else stays a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_params(pairs: Iterable[str]) -> dict[str, Any]:
    """``["alpha=0.1", "fit_intercept=false"]`` -> ``{"alpha": 0.1, "fit_intercept": False}``."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInputError(f"parameter {pair!r} is not of the form key=value "
                                "(for example --param alpha=0.1)")
        params[key.strip()] = parse_value(value)
    return params


def check_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` when each key is a parameter of model ``name``'s regressor; else a clear error."""
    known = model_spec(name).make_regressor().get_params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise BadInputError(f"unknown parameter {', '.join(unknown)} for model {name}: "
                            f"use one of {', '.join(sorted(known))}")
    return params


def effective_params(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The catalogue defaults of model ``name`` overridden by ``params``."""
    return {**model_spec(name).defaults, **(params or {})}


# --- one training run, end to end ---------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """Everything a level-2 training run depends on; the CLI's options, one to one."""

    train_month: str = "2021-01"
    val_month: str | None = None  # default: the month after train_month
    source: str = "synthetic"
    color: str = "green"
    model: str = "linear"
    params: dict[str, Any] = field(default_factory=dict)
    n_rows: int | None = None
    seed: int = 0
    models_dir: Path | None = None  # default: settings.models_dir

    @property
    def validation_month(self) -> str:
        """``val_month``, or the month after ``train_month`` when it is not given."""
        return self.val_month or next_month(self.train_month)

    def month_request(self, month: str) -> MonthRequest:
        """The data of ``month`` this run reads: its source, color, row cap and seed."""
        return MonthRequest(month, source=self.source, color=self.color, n_rows=self.n_rows,
                            seed=self.seed)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced: the model file, its metadata and the fitted pipeline."""

    model_path: Path
    metadata: dict[str, Any]
    pipeline: Pipeline

    @property
    def version(self) -> str:
        """The model's version, ``v<N>``."""
        return str(self.metadata["version"])


def check_config(config: TrainConfig) -> TrainConfig:
    """``config`` when its months, model, parameters and row cap can be used; a clear error
    otherwise — before any data is loaded."""
    parse_month(config.train_month)
    parse_month(config.validation_month)
    check_source(config.source)
    check_params(config.model, config.params)
    if config.n_rows is not None and config.n_rows < 1:
        raise BadInputError(f"--rows must be a positive number of trips, got {config.n_rows}")
    return config


def _load_split(month: str, config: TrainConfig, settings: Settings,
                progress: Progress) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Prepared trips of ``month`` and a description of them for the metadata."""
    progress(f"loading {month} ({config.source}, {config.color}"
             + (f", first {config.n_rows:,} rows" if config.n_rows else "") + ") ...")
    request = config.month_request(month)
    raw = load_trips(request, settings=settings)
    raw_rows = len(raw)
    # Only the columns training reads: the full raw frame is freed before preparing (at 3M
    # trips it is 0.5 GB, and preparing copies what it is given).
    raw = raw[[name for name in input_columns(request.color) if name in raw.columns]]
    prepared = prepare_trips(raw, request.color)
    del raw
    if prepared.empty:
        raise BadInputError(f"no trips of {month} last 1-60 minutes: nothing to "
                            f"{'train' if month == config.train_month else 'validate'} on; "
                            "use more rows or another month")
    for name in FEATURE_COLUMNS:
        missing = int(prepared[name].isna().sum())
        if missing:
            raise BadInputError(f"{request.label}: {missing:,} of {len(prepared):,} trips have "
                                f"no {name}; fix the data or pick another month")
    progress(f"  {raw_rows:,} trips, {len(prepared):,} kept (1-60 minutes)")
    return prepared, {"month": month, "raw_rows": raw_rows, "rows": len(prepared),
                      "fingerprint": data_fingerprint(prepared)}


def _fit(config: TrainConfig, train: pd.DataFrame) -> Pipeline:
    """:func:`fit_model`, with a parameter value the regressor rejects as a one-line error."""
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        return fit_model(config.model, train, config.params)
    except InvalidParameterError as exc:
        raise BadInputError(f"bad parameter for model {config.model}: {exc}") from exc


def train_and_save(config: TrainConfig, *, settings: Settings,
                   progress: Progress = lambda _line: None) -> TrainResult:
    """Load, prepare, fit, evaluate and save one model; ``progress`` receives a line per step."""
    from level2_devops.metadata import build_metadata
    from level2_devops.model_store import read_metadata, save_model

    check_config(config)
    train, train_info = _load_split(config.train_month, config, settings, progress)
    val, val_info = _load_split(config.validation_month, config, settings, progress)
    progress(f"fitting {config.model} on {len(train):,} trips ...")
    started = time.perf_counter()
    pipeline = _fit(config, train)
    fit_seconds = time.perf_counter() - started
    progress(f"  fitted in {fit_seconds:.1f} s")
    progress("evaluating on the training and validation months ...")
    train_scores, val_scores = evaluate(pipeline, train), evaluate(pipeline, val)
    metadata = build_metadata(
        model=config.model,
        params=effective_params(config.model, config.params),
        data={"source": config.source, "color": config.color, "n_rows_cap": config.n_rows,
              "seed": config.seed if config.source == "synthetic" else None,
              "train": train_info, "val": val_info},
        metrics={"train_rmse": train_scores["rmse"], "val_rmse": val_scores["rmse"],
                 "train_mae": train_scores["mae"], "val_mae": val_scores["mae"]},
        extra={"features": list(FEATURE_COLUMNS), "target": TARGET,
               "fit_seconds": round(fit_seconds, 3)},
    )
    models_dir = Path(config.models_dir) if config.models_dir else settings.models_dir
    progress(f"saving to {models_dir} ...")
    path = save_model(pipeline, metadata, models_dir)
    return TrainResult(model_path=path, metadata=read_metadata(path), pipeline=pipeline)
