"""The one entry point to level 3's training: check the inputs, set the environment, run the flow.

``run_training(config, settings)`` is what ``mlops-levels level3 train`` calls, and what notebooks
and tests call. Arguments are checked before anything heavy is imported, so a typo costs
milliseconds, not a Prefect server start.

:class:`TrainConfig` is also the training flow's one parameter: business choices only (months,
data, models, search size, registration), JSON-friendly, so a deployment can carry it. Paths and
servers are not parameters: the flow reads them from the environment of whoever runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from level2_devops.models import MODELS, model_spec
from taxi_common.data import MonthRequest, check_source
from taxi_common.errors import BadInputError
from taxi_common.months import parse_month
from taxi_common.scenarios import as_scenario
from taxi_common.settings import Settings

DEFAULT_MODELS: tuple[str, ...] = tuple(MODELS)
MAX_TRIALS = 50
DEFAULT_OWNER = "mlops-levels workbook: level 3 training pipeline"


@dataclass(frozen=True)
class TrainConfig:
    """What to train: months, data source, candidate models and the size of the search.

    ``n_rows`` caps each month's rows; ``scenario`` is a synthetic drift scenario; ``register``
    registers the best candidate as ``alias``; ``owner`` is named in the model card.
    """

    train_months: tuple[str, ...]
    val_month: str
    source: str = "synthetic"
    color: str = "green"
    models: tuple[str, ...] = DEFAULT_MODELS
    trials: int = 3
    seed: int = 0
    n_rows: int | None = None
    scenario: str = "baseline"
    register: bool = True
    alias: str = "challenger"
    owner: str = DEFAULT_OWNER

    def month_request(self, month: str) -> MonthRequest:
        """The data of ``month`` for this run: source, color, row cap, seed and scenario."""
        return MonthRequest.make(month, source=self.source, color=self.color,
                                 n_rows=self.n_rows, seed=self.seed, scenario=self.scenario)

    def check(self) -> TrainConfig:
        """Raise :class:`BadInputError` for anything unusable; return self."""
        if not self.train_months:
            raise BadInputError("give at least one training month: --train-months 2021-01")
        for month in (*self.train_months, self.val_month):
            parse_month(month)
        if self.val_month in self.train_months:
            raise BadInputError(f"validation month {self.val_month} is also a training month: "
                                "pick another --val-month")
        check_source(self.source)
        if not self.models:
            raise BadInputError(f"give at least one model: --models {','.join(MODELS)}")
        for name in self.models:
            model_spec(name)
        if len(set(self.models)) != len(self.models):
            raise BadInputError(f"a model is listed twice in --models {','.join(self.models)}")
        if not 1 <= self.trials <= MAX_TRIALS:
            raise BadInputError(f"--trials {self.trials} must lie between 1 and {MAX_TRIALS}")
        if self.n_rows is not None and self.n_rows < 1:
            raise BadInputError(f"--rows {self.n_rows} must be a positive number of rows")
        as_scenario(self.scenario)
        for month in (*self.train_months, self.val_month):
            self.month_request(month)  # the color, and anything else a request refuses
        return self


def parse_models(text: str) -> tuple[str, ...]:
    """``"linear, ridge"`` -> ``("linear", "ridge")``; unknown names fail with the known list."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for name in names:
        model_spec(name)
    return names


def run_training(config: TrainConfig, settings: Settings) -> dict[str, Any]:
    """Run the Prefect training flow for ``config`` in this process, with ``settings``; the
    flow's summary.

    Sets PREFECT_HOME and friends (unless set), checks that configured servers answer, then
    imports Prefect and runs the flow with ``settings`` in the environment (restored afterwards):
    the flow reads its settings from there, as it does when a worker runs a deployment of it.
    Without PREFECT_API_URL, Prefect starts a temporary local server for this process.
    """
    from level3_training.runtime import check_services, prepare_environment, settings_environment

    config.check()
    prepare_environment(settings)
    check_services(settings)
    from level3_training.flow import training_flow

    with settings_environment(settings):
        return training_flow(config)
