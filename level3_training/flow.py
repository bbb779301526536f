"""The Prefect training flow: load → validate → prepare → featurize → train → evaluate → register.

``training_flow(config)`` takes one parameter, a :class:`~level3_training.pipeline.TrainConfig`:
business choices only, JSON-friendly, so a deployment carries it (level 5 runs the flow through
``run_deployment(..., parameters={"config": {...}})``). Paths and servers are not parameters: the
flow reads :meth:`Settings.from_env` when it starts, in whichever process runs it (a worker on
another machine uses its own WORKBOOK_HOME and MLFLOW_TRACKING_URI), and applies level 3's
environment defaults there for what is not set (telemetry off, bounded MLflow retries).
In-process callers use :func:`level3_training.pipeline.run_training`, which puts its settings into
the environment for the run.

Importing this module imports Prefect (whose settings are fixed at import: see
:func:`level3_training.runtime.prepare_environment`) but not MLflow.

Loading a month has retries for transient failures only: a
:class:`~taxi_common.errors.TransientDataError` (no connection, a timeout, HTTP 5xx) or an error
that is not the user's; an error the user must fix (another
:class:`~taxi_common.errors.WorkbookError`: unpublished month, bad schema) fails at once.
Registration is all or nothing instead (see :mod:`level3_training.registry`).
Prepared months are cached as parquet keyed by the hash of their inputs
(:mod:`level3_training.data`), so Prefect's own input hashing is switched off (``NO_CACHE``).

Every MLflow call goes through a client bound to the settings' tracking URI; nothing sets
MLflow's global tracking URI or the process environment from a task.
"""

# No ``from __future__ import annotations`` here: a runner (``flow.serve``, a worker) pickles the
# flow function by value, keeping its annotations but only the globals its code uses, so a string
# annotation such as "TrainConfig" could not be resolved when Prefect validates the parameters in
# the flow-run process (tests/level3/test_flow.py runs a served deployment to show it works).
from typing import TYPE_CHECKING, Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from level2_devops.training import data_fingerprint
from level3_training.candidates import CandidateResult, train_candidate
from level3_training.data import MonthRequest, combine_months, prepared_month
from level3_training.model_card import ARTIFACT, CardContext, as_description, model_card
from level3_training.pipeline import TrainConfig
from level3_training.registry import MODEL_NAME, client_for, register_version
from level3_training.runtime import apply_environment_defaults
from level3_training.tracking import EXPERIMENT, code_version, configure_tracking, log_values
from level3_training.tracking import start_run as start_mlflow_run
from taxi_common.errors import TransientDataError, WorkbookError
from taxi_common.settings import Settings

if TYPE_CHECKING:
    from level3_training.datasets import RunDatasets

FLOW_NAME = "taxi-duration-training"


def is_transient(exc: BaseException | None) -> bool:
    """Whether a failure may pass on a second attempt: anything but a user's error, and of the
    user's errors only the :class:`TransientDataError` s."""
    return isinstance(exc, TransientDataError) or not isinstance(exc, WorkbookError)


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: retry transient failures, never errors the user must fix."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable state counts as transient
        return True
    return is_transient(exc if isinstance(exc, BaseException) else None)


@task(name="load-validate-prepare", retries=2, retry_delay_seconds=1,
      retry_condition_fn=_retry_transient, cache_policy=NO_CACHE, persist_result=False,
      task_run_name="load-{request.month}")
def load_month(request: MonthRequest, settings: Settings) -> tuple[pd.DataFrame, bool]:
    """Prepared rows of one month (from the input-hash cache when present) and whether cached."""
    df, hit = prepared_month(request, settings)
    get_run_logger().info("%s: %d trips (%s)", request.label, len(df),
                          "cache hit" if hit else "loaded, validated, prepared, cached")
    return df, hit


@task(name="featurize", cache_policy=NO_CACHE, persist_result=False)
def featurize(train: pd.DataFrame) -> dict[str, int]:
    """Fit both featurizers once on the training rows: how many features each model family sees."""
    from taxi_common.features import TripFeaturizer, ZoneNumberFeatures
    from taxi_common.prepare import FEATURE_COLUMNS

    x = train[list(FEATURE_COLUMNS)]
    counts = {"features_one_hot": int(TripFeaturizer().fit(x).transform(x.head(1)).shape[1]),
              "features_numeric": int(ZoneNumberFeatures().fit(x).transform(x.head(1)).shape[1])}
    get_run_logger().info("features: %s", counts)
    return counts


@task(name="train-candidate", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="train-{name}")
def train_candidate_task(name: str, train: pd.DataFrame, val: pd.DataFrame, trials: int,
                         seed: int, tracking_uri: str, experiment_id: str, parent_run_id: str,
                         tags: dict[str, str], datasets: "RunDatasets") -> CandidateResult:
    """Random search for one model; nested MLflow runs; the best trial's model logged."""
    result = train_candidate(name, train, val, trials=trials, seed=seed,
                             client=client_for(tracking_uri), experiment_id=experiment_id,
                             parent_run_id=parent_run_id, tags=tags, datasets=datasets)
    get_run_logger().info("%s: best of %d trials val RMSE %.4f (params %s)", name,
                          len(result.trials), result.val_rmse, result.best.params)
    return result


@task(name="register-best", cache_policy=NO_CACHE, persist_result=False)
def register_best(best: CandidateResult, tracking_uri: str, card: str,
                  tags: dict[str, str], alias: str) -> str:
    """Write the model card beside the best candidate's model and in its run, then register the
    model as a new version with ``alias`` and the card as its description; its number.

    No task retries: registration is all or nothing (a failure deletes the version), and the
    MLflow client already retries transient HTTP errors (MLFLOW_HTTP_REQUEST_MAX_RETRIES).
    """
    client = client_for(tracking_uri)
    log_model_card(client, best, card)
    version = register_version(client, best.model_id, best.run_id,
                               description=as_description(card), tags=tags, alias=alias)
    get_run_logger().info("registered %s version %s as @%s", MODEL_NAME, version.version, alias)
    return str(version.version)


def log_model_card(client: Any, best: CandidateResult, card: str) -> None:
    """``card`` as ``model_card.md`` in the candidate's run and beside the logged model's files."""
    import tempfile
    from pathlib import Path

    client.log_text(best.run_id, card, ARTIFACT)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ARTIFACT
        path.write_text(card, encoding="utf-8")
        client.log_model_artifact(best.model_id, str(path))


def lineage_tags(data: dict[str, Any]) -> dict[str, str]:
    """The data-lineage tags every run and registered version carries."""
    return {"data.source": data["source"], "data.color": data["color"],
            "data.train_months": ",".join(data["train_months"]),
            "data.val_month": data["val_month"], "data.train_rows": str(data["train_rows"]),
            "data.val_rows": str(data["val_rows"]),
            "data.train_fingerprint": data["train_fingerprint"],
            "data.val_fingerprint": data["val_fingerprint"], "data.seed": str(data["seed"]),
            "data.scenario": data["scenario"], "data.n_rows_cap": str(data["n_rows"]),
            "code.version": data["code_version"]}


def data_summary(config: TrainConfig, train: pd.DataFrame, val: pd.DataFrame,
                 hits: dict[str, bool]) -> dict[str, Any]:
    """What the run trained and validated on: months, rows, fingerprints, cache hits, code."""
    return {"source": config.source, "color": config.color,
            "train_months": list(config.train_months), "val_month": config.val_month,
            "train_rows": len(train), "val_rows": len(val),
            "train_fingerprint": data_fingerprint(train), "val_fingerprint": data_fingerprint(val),
            "seed": config.seed, "scenario": config.scenario, "n_rows": config.n_rows,
            "code_version": code_version(), "cache_hits": hits}


def version_tags(best: CandidateResult, tags: dict[str, str], parent: str) -> dict[str, str]:
    """The tags of the registered version: lineage, the model, its scores, its runs."""
    return {**tags, "model.name": best.name, "model.id": best.model_id,
            "val_rmse": f"{best.val_rmse:.6f}", "val_mae": f"{best.best.val['mae']:.6f}",
            "train_rmse": f"{best.best.train['rmse']:.6f}", "pipeline_run_id": parent}


def flow_settings() -> Settings:
    """The settings of whoever runs the flow, with level 3's environment defaults applied."""
    settings = Settings.from_env()
    apply_environment_defaults(settings)
    return settings


@flow(name=FLOW_NAME, log_prints=True)
def training_flow(config: TrainConfig) -> dict[str, Any]:
    """Train every model in ``config.models`` on the training months, pick the best on the
    validation month, log everything to MLflow and register the best as ``config.alias``.

    Settings come from the environment of the process that runs the flow. Returns a summary
    dict (JSON-friendly).
    """
    from prefect.runtime import flow_run

    from level3_training.datasets import run_datasets

    config.check()
    settings = flow_settings()
    logger = get_run_logger()

    train_requests = [config.month_request(m) for m in config.train_months]
    val_request = config.month_request(config.val_month)
    loaded = [load_month(r, settings) for r in train_requests]
    val, val_hit = load_month(val_request, settings)
    train = combine_months([df for df, _ in loaded])
    hits = {**{r.month: hit for r, (_, hit) in zip(train_requests, loaded, strict=True)},
            f"val:{config.val_month}": val_hit}
    data = data_summary(config, train, val, hits)
    tags = lineage_tags(data)
    datasets = run_datasets(train, train_requests, data["train_fingerprint"], val, val_request,
                            data["val_fingerprint"])

    experiment_id = configure_tracking(settings)
    tracking_uri = settings.tracking_uri
    client = client_for(tracking_uri)
    parent = start_mlflow_run(client, experiment_id,
                              f"pipeline {'+'.join(config.train_months)}->{config.val_month}",
                              tags={**tags, "level3.kind": "pipeline"})
    try:
        datasets.log(client, parent)
        counts = featurize(train)
        log_values(client, parent, params={"models": ",".join(config.models),
                                           "trials": config.trials, "seed": config.seed,
                                           **counts},
                   metrics={"train_rows": len(train), "val_rows": len(val)},
                   tags={"data.cache_hits": sum(hits.values()),
                         "prefect.flow_run_id": str(flow_run.id)})
        results = [train_candidate_task(name, train, val, config.trials, config.seed,
                                        tracking_uri, experiment_id, parent, tags, datasets)
                   for name in config.models]
        best = min(results, key=lambda r: r.val_rmse)
        log_values(client, parent,
                   metrics={f"val_rmse_{r.name}": r.val_rmse for r in results}
                   | {"best_val_rmse": best.val_rmse, "best_val_mae": best.best.val["mae"]},
                   tags={"best.model": best.name, "best.run_id": best.run_id,
                         "best.model_id": best.model_id})
        version = None
        if config.register:
            card = model_card(best, results, CardContext(data, parent, config.owner, MODEL_NAME))
            version = register_best(best, tracking_uri, card, version_tags(best, tags, parent),
                                    config.alias)
            client.set_tag(parent, "registered.version", version)
    except BaseException:
        client.set_terminated(parent, "FAILED")
        raise
    client.set_terminated(parent, "FINISHED")
    logger.info("best: %s val RMSE %.4f; registered version %s", best.name, best.val_rmse,
                version)
    return {"experiment": EXPERIMENT, "experiment_id": experiment_id, "parent_run_id": parent,
            "flow_run_id": str(flow_run.id), "tracking_uri": tracking_uri,
            "workbook_home": str(settings.workbook_home), "data": data, "features": counts,
            "candidates": [r.summary() for r in results], "best": best.name,
            "best_model_id": best.model_id, "best_val_rmse": best.val_rmse, "version": version,
            "alias": config.alias if version else None, "model_name": MODEL_NAME}
