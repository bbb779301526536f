"""MLflow tracking for the pipeline: the experiment, nested runs, lineage tags and the model.

Everything goes through an ``MlflowClient`` bound to the tracking URI: runs are created with
explicit parent IDs, and the model is logged as a LoggedModel through the client too
(:func:`log_pipeline_model`), so nothing depends on MLflow's global tracking URI, the active run,
or the thread a Prefect task runs in. Nothing here runs at import: call
:func:`configure_tracking` inside a command.
"""

from __future__ import annotations

import functools
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from taxi_common.prepare import FEATURE_COLUMNS
from taxi_common.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Dataset
    from mlflow.models.model import ModelInfo
    from sklearn.pipeline import Pipeline

EXPERIMENT = "taxi-duration"
#: Types inside our pipelines that skops does not trust by default (checked per model with
#: ``skops.io.get_untrusted_types``): our featurizers and the tree models' node arrays. We write
#: these files ourselves, so we trust them.
SKOPS_TRUSTED_TYPES = ["taxi_common.features.TripFeaturizer",
                       "taxi_common.features.ZoneNumberFeatures",
                       "sklearn.tree._tree.Tree",
                       "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
_REPO_ROOT = Path(__file__).resolve().parent.parent


def is_local_store(tracking_uri: str) -> bool:
    """True for the embedded store (SQLite file), False for a tracking server."""
    return not tracking_uri.startswith(("http://", "https://", "databricks"))


def artifact_root(settings: Settings) -> str:
    """Where the embedded store keeps artifacts: ``file://<home>/mlartifacts``."""
    return (settings.workbook_home / "mlartifacts").as_uri()


@contextmanager
def tracking_uri_scope(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set to ``uri`` inside the block, restored afterwards.

    For reading with MLflow's fluent API in a notebook or a test (``mlflow.search_runs``,
    ``mlflow.sklearn.load_model("models:/…")``). It changes process-wide state: the pipeline
    never uses it.

    ``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI to the environment; left there,
    a later ``Settings.from_env()`` in the same process (a notebook, a test) would silently read
    it as team mode. The previous value, or its absence, is restored.
    """
    import mlflow

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved)  # None unsets it
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def configure_tracking(settings: Settings, experiment: str = EXPERIMENT) -> str:
    """The ID of ``experiment`` in ``settings.tracking_uri`` (created if new).

    MLflow's global state is left alone: clients get explicit URIs.
    In the embedded mode the experiment is created with an explicit artifact location under
    WORKBOOK_HOME; a tracking server chooses its own (``--artifacts-destination``).
    """
    import mlflow

    uri = settings.tracking_uri
    if is_local_store(uri):
        settings.workbook_home.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    location = f"{artifact_root(settings)}/{experiment}" if is_local_store(uri) else None
    try:
        return client.create_experiment(experiment, artifact_location=location)
    except Exception:  # noqa: BLE001 - created meanwhile by another process
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the checkout (``+dirty`` with local changes), else the package version."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=_REPO_ROOT,
                                capture_output=True, text=True, timeout=5, check=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=_REPO_ROOT, capture_output=True, text=True, timeout=5,
                               check=True).stdout
        return commit.strip() + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return f"mlops-levels {package_version()}"


def package_version() -> str:
    """The installed version of the mlops-levels distribution."""
    try:
        return metadata.version("mlops-levels")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def start_run(client: MlflowClient, experiment_id: str, name: str,
              parent_run_id: str | None = None, tags: dict[str, str] | None = None) -> str:
    """Create a run (nested under ``parent_run_id`` when given) and return its ID."""
    all_tags = {"mlflow.runName": name, **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    return client.create_run(experiment_id, tags=all_tags, run_name=name).info.run_id


def log_values(client: MlflowClient, run_id: str, *, params: dict[str, Any] | None = None,
               metrics: dict[str, float] | None = None, tags: dict[str, Any] | None = None,
               model_id: str | None = None, dataset: Dataset | None = None) -> None:
    """Params, metrics and tags of a run in one batch call.

    With ``model_id`` the metrics belong to that logged model too; with ``dataset`` they say
    on which rows they were measured (its name and digest).
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.time import get_current_time_millis

    now = get_current_time_millis()
    linked = {"model_id": model_id, "dataset_name": dataset.name if dataset else None,
              "dataset_digest": dataset.digest if dataset else None}
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0, **linked) for k, v in (metrics or {}).items()],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )


def pip_requirements() -> list[str]:
    """The packages a logged model needs, pinned to the installed versions (no inference)."""
    names = ("scikit-learn", "numpy", "pandas", "scipy", "skops")
    pins = [f"{n}=={metadata.version(n)}" for n in names]
    return [*pins, f"mlops-levels=={package_version()}"]


def model_input_example(df: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """A few raw input rows with plain dtypes (zones as int64, distance as float64)."""
    example = df[list(FEATURE_COLUMNS)].head(rows).copy()
    for name in ("PULocationID", "DOLocationID"):
        example[name] = example[name].astype("int64")
    example["trip_distance"] = example["trip_distance"].astype("float64")
    return example.reset_index(drop=True)


def log_pipeline_model(client: MlflowClient, run_id: str, pipeline: Pipeline,
                       example: pd.DataFrame, *, params: dict[str, Any] | None = None,
                       name: str = "model") -> ModelInfo:
    """Log ``pipeline`` as the LoggedModel ``name`` of run ``run_id``, through ``client`` only.

    What ``mlflow.sklearn.log_model`` does, without its global tracking URI and active run:
    create the LoggedModel (with ``params``) in the run's experiment, record it as the run's
    output, save the sklearn flavor (signature, input example, pinned requirements, skops
    trusted types) into a temporary folder, upload it, and mark the model READY (FAILED if any
    step fails). Returns the ``ModelInfo``; its ``model_id`` names the model for registration.
    """
    import tempfile

    import mlflow.sklearn
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model, infer_signature

    with warnings.catch_warnings():  # zone IDs are integers on purpose: they are never missing
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        signature = infer_signature(example, pipeline.predict(example))
    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(
        experiment_id, name=name, source_run_id=run_id, model_type="regressor",
        params={k: str(v) for k, v in (params or {}).items()})
    try:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        model = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                      run_id=run_id, model_id=logged.model_id)
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            path = os.path.join(tmp, name)
            mlflow.sklearn.save_model(
                pipeline, path, mlflow_model=model, signature=signature, input_example=example,
                pip_requirements=pip_requirements(), skops_trusted_types=SKOPS_TRUSTED_TYPES)
            client.log_model_artifacts(logged.model_id, path)
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    return model.get_model_info(client.finalize_logged_model(logged.model_id,
                                                             LoggedModelStatus.READY))
