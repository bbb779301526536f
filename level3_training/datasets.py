"""The training and validation sets as MLflow datasets: named, fingerprinted, with their source.

A run's inputs (``client.log_inputs``) say which rows it learnt from and was scored on; a metric
logged with a dataset's name and digest says on which rows it was measured. The digest is
:func:`level2_devops.training.data_fingerprint` of the rows, the same value as the run's
``data.*_fingerprint`` tags. The source, :class:`TaxiMonthsSource`, names the months as
:class:`~taxi_common.data.MonthRequest` s (source, color, row cap, seed, scenario), and
``load()`` rebuilds the rows from them.

This module imports MLflow: import it inside a function, after the environment is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
from mlflow.data.dataset_source import DatasetSource

from taxi_common.data import MonthRequest
from taxi_common.prepare import FEATURE_COLUMNS, TARGET
from taxi_common.settings import Settings

if TYPE_CHECKING:
    from mlflow.entities import Dataset

#: The ``mlflow.data.context`` input tags of the two sets.
TRAINING, VALIDATION = "training", "validation"


class TaxiMonthsSource(DatasetSource):
    """Where a set of trips comes from: one or more months, each a :class:`MonthRequest`."""

    def __init__(self, requests: Sequence[MonthRequest]) -> None:
        if not requests:
            raise ValueError("a dataset source needs at least one month")
        self.requests = tuple(requests)

    @staticmethod
    def _get_source_type() -> str:
        return "taxi-months"

    @property
    def uri(self) -> str:
        """``taxi-months:synthetic/green/2021-01+2021-02?rows=3000&seed=0&scenario=baseline``."""
        first = self.requests[0]
        query = [f"rows={first.n_rows}"] if first.n_rows is not None else []
        if first.source == "synthetic":
            query += [f"seed={first.seed}", f"scenario={first.scenario}"]
            if (first.scenario_start_day, first.scenario_strength) != (1, 1.0):
                query += [f"start_day={first.scenario_start_day}",
                          f"strength={first.scenario_strength}"]
        months = "+".join(r.month for r in self.requests)
        return f"taxi-months:{first.source}/{first.color}/{months}" + (
            f"?{'&'.join(query)}" if query else "")

    def load(self, settings: Settings | None = None) -> pd.DataFrame:
        """The prepared rows again (from the prepared-data cache when present)."""
        from level3_training.data import combine_months, prepared_month

        settings = settings or Settings.from_env()
        return combine_months([prepared_month(r, settings)[0] for r in self.requests])

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> TaxiMonthsSource:
        raise NotImplementedError("build a TaxiMonthsSource from MonthRequests")

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "requests": [asdict(r) for r in self.requests]}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> TaxiMonthsSource:
        return cls([MonthRequest(**r) for r in source_dict["requests"]])


@dataclass(frozen=True)
class RunDatasets:
    """The training and validation sets of a run, as MLflow dataset entities."""

    training: Dataset
    validation: Dataset

    def log(self, client: Any, run_id: str) -> None:
        """Log both sets as the inputs of run ``run_id``, tagged with their context."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        client.log_inputs(run_id, datasets=[
            DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
            for context, dataset in ((TRAINING, self.training), (VALIDATION, self.validation))])


def month_dataset(df: pd.DataFrame, requests: Sequence[MonthRequest], digest: str) -> Dataset:
    """The MLflow dataset of the prepared rows ``df`` of ``requests`` (features and target)."""
    import warnings

    import mlflow
    from mlflow.entities import Dataset

    source = TaxiMonthsSource(requests)
    name = f"{requests[0].source}-{requests[0].color}-{'+'.join(r.month for r in requests)}"
    columns = df[[*FEATURE_COLUMNS, TARGET]].copy()
    for zone in ("PULocationID", "DOLocationID"):  # categories: the schema wants plain integers
        columns[zone] = columns[zone].astype("int64")
    with warnings.catch_warnings():  # zone IDs are integers on purpose: they are never missing
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        dataset = mlflow.data.from_pandas(columns, source=source, targets=TARGET, name=name,
                                          digest=digest)
        return Dataset(**dataset.to_dict())  # the schema is inferred here


def run_datasets(train: pd.DataFrame, train_requests: Sequence[MonthRequest],
                 train_digest: str, val: pd.DataFrame, val_request: MonthRequest,
                 val_digest: str) -> RunDatasets:
    """The training set (all training months) and the validation set of a run."""
    return RunDatasets(month_dataset(train, train_requests, train_digest),
                       month_dataset(val, [val_request], val_digest))
