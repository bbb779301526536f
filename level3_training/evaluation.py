"""Registered versions scored on the same holdout month: the comparison levels 4 and 5 make.

The holdout is a prepared month from :func:`level3_training.data.prepared_month` (cached by the
hash of its inputs), so every version evaluated on the same month, source, color, row cap, seed
and scenario sees exactly the same rows; :attr:`Evaluation.fingerprint` proves it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from level3_training.data import MonthRequest, prepared_month
from level3_training.registry import MODEL_NAME, load_version
from taxi_common.months import parse_month
from taxi_common.scenarios import Scenario
from taxi_common.settings import Settings

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.pipeline import Pipeline


@dataclass(frozen=True)
class Evaluation:
    """How one pinned version scored on one holdout month (minutes)."""

    version: str
    month: str
    rmse: float
    mae: float
    n: int
    #: :func:`level2_devops.training.data_fingerprint` of the holdout rows.
    fingerprint: str

    def as_dict(self) -> dict[str, Any]:
        """The evaluation as a plain dict (for JSON)."""
        return asdict(self)


def holdout(month: str, settings: Settings, *, source: str = "synthetic", color: str = "green",
            seed: int = 0, scenario: Scenario | str = "baseline",
            n_rows: int | None = None) -> pd.DataFrame:
    """The prepared, validated rows of a holdout month (the training pipeline's own recipe)."""
    _check_arguments(month, source)
    request = MonthRequest.make(month, source=source, color=color, n_rows=n_rows, seed=seed,
                                scenario=scenario)
    return prepared_month(request, settings)[0]


def score(version: str, pipeline: Pipeline, rows: pd.DataFrame, month: str) -> Evaluation:
    """RMSE, MAE and row count of ``pipeline`` on prepared ``rows`` of ``month``."""
    from level2_devops.training import data_fingerprint, evaluate

    metrics = evaluate(pipeline, rows)
    return Evaluation(version=version, month=month, rmse=metrics["rmse"], mae=metrics["mae"],
                      n=len(rows), fingerprint=data_fingerprint(rows))


def evaluate_version(client: MlflowClient, version: str, month: str, settings: Settings, *,
                     source: str = "synthetic", color: str = "green", seed: int = 0,
                     scenario: Scenario | str = "baseline", n_rows: int | None = None,
                     name: str = MODEL_NAME) -> Evaluation:
    """Score one version (a number, or an alias resolved once) on the holdout ``month``."""
    return evaluate_versions(client, [version], month, settings, source=source, color=color,
                             seed=seed, scenario=scenario, n_rows=n_rows, name=name)[0]


def evaluate_versions(client: MlflowClient, versions: list[str], month: str, settings: Settings,
                      *, source: str = "synthetic", color: str = "green", seed: int = 0,
                      scenario: Scenario | str = "baseline", n_rows: int | None = None,
                      name: str = MODEL_NAME) -> list[Evaluation]:
    """Score several versions on one holdout month, loaded once: ``champion`` vs ``challenger``.

    The arguments are checked and the versions loaded first: a typo or a missing alias fails
    before any data is made.
    """
    _check_arguments(month, source)
    loaded = [load_version(client, v, name) for v in versions]
    rows = holdout(month, settings, source=source, color=color, seed=seed, scenario=scenario,
                   n_rows=n_rows)
    return [score(version, pipeline, rows, month) for version, pipeline in loaded]


def _check_arguments(month: str, source: str) -> None:
    """A malformed month or an unknown source, in one line, before anything is loaded."""
    from taxi_common.data import check_source

    parse_month(month)
    check_source(source)
