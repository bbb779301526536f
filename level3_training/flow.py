"""The Prefect training flow: load → validate → prepare → featurize → train → evaluate → register.

Import this module only after :func:`level3_training.runtime.prepare_environment` (Prefect reads
its settings, and creates its home folder, when it is imported); :func:`level3_training.pipeline.
run_training` does that for you.

Loading a month has retries, but an error the user must fix (a
:class:`~taxi_common.errors.WorkbookError`: unpublished month, bad schema) is not retried.
Registration is all or nothing instead (see :mod:`level3_training.registry`).
Prepared months are cached as parquet keyed by the hash of their inputs
(:mod:`level3_training.data`), so Prefect's own input hashing is switched off (``NO_CACHE``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from level2_devops.training import data_fingerprint
from level3_training.candidates import CandidateResult, train_candidate
from level3_training.data import MonthRequest, combine_months, prepared_month
from level3_training.registry import MODEL_NAME, client_for, register_version
from level3_training.tracking import EXPERIMENT, code_version, configure_tracking, log_values
from level3_training.tracking import start_run as start_mlflow_run
from taxi_common.errors import WorkbookError
from taxi_common.settings import Settings

FLOW_NAME = "taxi-duration-training"


def _not_a_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: retry transient failures, never errors the user must fix."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable state counts as transient
        return True
    return not isinstance(exc, WorkbookError)


@task(name="load-validate-prepare", retries=2, retry_delay_seconds=1,
      retry_condition_fn=_not_a_user_error, cache_policy=NO_CACHE, persist_result=False)
def load_month(request: MonthRequest, settings: Settings) -> tuple[pd.DataFrame, bool]:
    """Prepared rows of one month (from the input-hash cache when present) and whether cached."""
    df, hit = prepared_month(request, settings)
    get_run_logger().info("%s %s: %d trips (%s)", request.source, request.month, len(df),
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
                         tags: dict[str, str]) -> CandidateResult:
    """Random search for one model; nested MLflow runs; the best trial's model logged."""
    result = train_candidate(name, train, val, trials=trials, seed=seed,
                             client=client_for(tracking_uri), experiment_id=experiment_id,
                             parent_run_id=parent_run_id, tags=tags)
    get_run_logger().info("%s: best of %d trials val RMSE %.4f (params %s)", name,
                          len(result.trials), result.val_rmse, result.best.params)
    return result


@task(name="register-best", cache_policy=NO_CACHE, persist_result=False)
def register_best(best: CandidateResult, tracking_uri: str, description: str,
                  tags: dict[str, str], alias: str) -> str:
    """Register the best candidate's model as a new version with ``alias``; its number.

    No task retries: registration is all or nothing (a failure deletes the version), and the
    MLflow client already retries transient HTTP errors (MLFLOW_HTTP_REQUEST_MAX_RETRIES).
    """
    version = register_version(client_for(tracking_uri), best.model_uri, best.run_id,
                               description=description, tags=tags, alias=alias)
    get_run_logger().info("registered %s version %s as @%s", MODEL_NAME, version.version, alias)
    return str(version.version)


def describe(best: CandidateResult, data: dict[str, Any]) -> str:
    """The registered version's description: what it was trained on and how it scored."""
    params = ", ".join(f"{k}={v}" for k, v in sorted(best.best.params.items())) or "defaults"
    return (f"{best.name} ({params}) trained on {data['source']} {data['color']} "
            f"{', '.join(data['train_months'])} ({data['train_rows']} trips, fingerprint "
            f"{data['train_fingerprint']}); validated on {data['val_month']} ({data['val_rows']} "
            f"trips): RMSE {best.val_rmse:.4f} min, MAE {best.best.val['mae']:.4f} min "
            f"(train RMSE {best.best.train['rmse']:.4f}). Run {best.run_id}, code "
            f"{data['code_version']}.")


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


@flow(name=FLOW_NAME, log_prints=True)
def training_flow(train_months: list[str], val_month: str, models: list[str],
                  workbook_home: str, tracking_uri: str, tlc_base_url: str,
                  source: str = "synthetic", color: str = "green", trials: int = 3,
                  seed: int = 0, n_rows: int | None = None, scenario: str = "baseline",
                  register_model: bool = True, alias: str = "challenger") -> dict[str, Any]:
    """Train every model in ``models`` on ``train_months``, pick the best on ``val_month``,
    log everything to MLflow and register the best as ``alias``. Returns a summary dict."""
    settings = Settings(workbook_home=Path(workbook_home), tlc_base_url=tlc_base_url,
                        mlflow_tracking_uri=tracking_uri)
    logger = get_run_logger()

    def request(month: str) -> MonthRequest:
        return MonthRequest.make(month, source=source, color=color, n_rows=n_rows, seed=seed,
                                 scenario=scenario)

    loaded = [load_month(request(m), settings) for m in train_months]
    val, val_hit = load_month(request(val_month), settings)
    train = combine_months([df for df, _ in loaded])
    data = {"source": source, "color": color, "train_months": list(train_months),
            "val_month": val_month, "train_rows": len(train), "val_rows": len(val),
            "train_fingerprint": data_fingerprint(train), "val_fingerprint": data_fingerprint(val),
            "seed": seed, "scenario": scenario, "n_rows": n_rows, "code_version": code_version(),
            "cache_hits": {**{m: hit for m, (_, hit) in zip(train_months, loaded, strict=True)},
                           f"val:{val_month}": val_hit}}
    tags = lineage_tags(data)

    experiment_id = configure_tracking(settings)
    client = client_for(tracking_uri)
    parent = start_mlflow_run(client, experiment_id,
                              f"pipeline {'+'.join(train_months)}->{val_month}",
                              tags={**tags, "level3.kind": "pipeline"})
    try:
        counts = featurize(train)
        log_values(client, parent, params={"models": ",".join(models), "trials": trials,
                                           "seed": seed, **counts},
                   metrics={"train_rows": len(train), "val_rows": len(val)},
                   tags={"data.cache_hits": sum(data["cache_hits"].values())})
        results = [train_candidate_task(name, train, val, trials, seed, tracking_uri,
                                        experiment_id, parent, tags) for name in models]
        best = min(results, key=lambda r: r.val_rmse)
        log_values(client, parent,
                   metrics={f"val_rmse_{r.name}": r.val_rmse for r in results}
                   | {"best_val_rmse": best.val_rmse, "best_val_mae": best.best.val["mae"]},
                   tags={"best.model": best.name, "best.run_id": best.run_id})
        version = None
        if register_model:
            version_tags = {**tags, "model.name": best.name, "val_rmse": f"{best.val_rmse:.6f}",
                            "val_mae": f"{best.best.val['mae']:.6f}",
                            "train_rmse": f"{best.best.train['rmse']:.6f}",
                            "pipeline_run_id": parent}
            version = register_best(best, tracking_uri, describe(best, data), version_tags, alias)
            client.set_tag(parent, "registered.version", version)
    except BaseException:
        client.set_terminated(parent, "FAILED")
        raise
    client.set_terminated(parent, "FINISHED")
    logger.info("best: %s val RMSE %.4f; registered version %s", best.name, best.val_rmse,
                version)
    return {"experiment": EXPERIMENT, "experiment_id": experiment_id, "parent_run_id": parent,
            "data": data, "features": counts, "candidates": [r.summary() for r in results],
            "best": best.name, "best_val_rmse": best.val_rmse, "version": version,
            "alias": alias if version else None, "model_name": MODEL_NAME}
