"""Train one candidate model: its random-search trials, each a nested MLflow run, the best logged.

Plain functions (no Prefect): the flow wraps them in tasks, tests can call them directly.
The candidate's run logs the training and validation sets as its inputs; the best trial's
pipeline becomes a LoggedModel with its parameters, and the candidate's metrics are logged
against that model and the set they were measured on.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from level2_devops.training import effective_params, evaluate, fit_model
from level3_training.search import sample_trials
from level3_training.tracking import log_pipeline_model, log_values, model_input_example, start_run

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.models.model import ModelInfo

    from level3_training.datasets import RunDatasets


@dataclass
class TrialResult:
    """One parameter set of one model, scored on the training and validation months."""

    trial: int
    params: dict[str, Any]
    train: dict[str, float]
    val: dict[str, float]
    fit_seconds: float
    run_id: str = ""


@dataclass
class CandidateResult:
    """A model's best trial, the run that holds its logged model, and all its trials."""

    name: str
    run_id: str
    best: TrialResult
    trials: list[TrialResult] = field(default_factory=list)
    model_uri: str = ""
    model_id: str = ""

    @property
    def val_rmse(self) -> float:
        """Validation RMSE of the best trial (minutes)."""
        return self.best.val["rmse"]

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {"name": self.name, "run_id": self.run_id, "model_uri": self.model_uri,
                "model_id": self.model_id, "params": self.best.params,
                "best_trial": self.best.trial,
                "train_rmse": self.best.train["rmse"], "train_mae": self.best.train["mae"],
                "val_rmse": self.best.val["rmse"], "val_mae": self.best.val["mae"],
                "trials": [asdict(t) for t in self.trials]}


def run_trial(name: str, trial: int, params: dict[str, Any], train: pd.DataFrame,
              val: pd.DataFrame) -> tuple[TrialResult, Any]:
    """Fit ``name`` with ``params`` on ``train``, score it on both months; result and pipeline."""
    started = time.perf_counter()
    pipeline = fit_model(name, train, params)
    seconds = time.perf_counter() - started
    result = TrialResult(trial, effective_params(name, params), evaluate(pipeline, train),
                         evaluate(pipeline, val), seconds)
    return result, pipeline


def _metrics(result: TrialResult) -> dict[str, float]:
    return {**_train_metrics(result), **_val_metrics(result), "fit_seconds": result.fit_seconds}


def _train_metrics(result: TrialResult) -> dict[str, float]:
    return {"train_rmse": result.train["rmse"], "train_mae": result.train["mae"]}


def _val_metrics(result: TrialResult) -> dict[str, float]:
    return {"val_rmse": result.val["rmse"], "val_mae": result.val["mae"]}


def log_candidate_model(client: MlflowClient, run_id: str, name: str, best: TrialResult,
                        pipeline: Any, train: pd.DataFrame, datasets: RunDatasets) -> ModelInfo:
    """Log the best trial's pipeline as the run's LoggedModel, then its metrics against it and
    the set each was measured on; the ``ModelInfo``."""
    info = log_pipeline_model(client, run_id, pipeline, model_input_example(train),
                              params={"model": name, **best.params})
    log_values(client, run_id, metrics=_train_metrics(best), model_id=info.model_id,
               dataset=datasets.training)
    log_values(client, run_id, metrics=_val_metrics(best), model_id=info.model_id,
               dataset=datasets.validation)
    log_values(client, run_id, metrics={"fit_seconds": best.fit_seconds}, model_id=info.model_id)
    return info


def train_candidate(name: str, train: pd.DataFrame, val: pd.DataFrame, *, trials: int,
                    seed: int, client: MlflowClient, experiment_id: str, parent_run_id: str,
                    tags: dict[str, str], datasets: RunDatasets) -> CandidateResult:
    """Random search for ``name``; a nested run per trial under a run for the candidate.

    Only the best trial's model is logged (in the candidate's run), with signature and example.
    """
    candidate_run = start_run(client, experiment_id, name, parent_run_id,
                              {**tags, "model.name": name, "level3.kind": "candidate"})
    try:
        datasets.log(client, candidate_run)
        best: tuple[TrialResult, Any] | None = None
        results = []
        for i, params in enumerate(sample_trials(name, trials, seed)):
            result, pipeline = run_trial(name, i, params, train, val)
            result.run_id = start_run(client, experiment_id, f"{name} trial {i}", candidate_run,
                                      {"model.name": name, "level3.kind": "trial",
                                       "trial": str(i)})
            log_values(client, result.run_id, params={"model": name, **result.params},
                       metrics=_metrics(result))
            client.set_terminated(result.run_id, "FINISHED")
            results.append(result)
            if best is None or result.val["rmse"] < best[0].val["rmse"]:
                best = (result, pipeline)
        assert best is not None
        log_values(client, candidate_run, params={"model": name, **best[0].params},
                   tags={"trials": len(results), "best_trial": best[0].trial,
                         "best_trial_run_id": best[0].run_id})
        info = log_candidate_model(client, candidate_run, name, best[0], best[1], train,
                                   datasets)
    except BaseException:
        client.set_terminated(candidate_run, "FAILED")
        raise
    client.set_terminated(candidate_run, "FINISHED")
    return CandidateResult(name, candidate_run, best[0], results, info.model_uri, info.model_id)
