"""Level 2's answers, recomputed with level 2's own functions, and the checks of its build tasks.

``mlops-levels level2 train`` is ``load_prepared_month`` + ``fit_model`` + ``evaluate``; the
answers call the same functions on the same data (default: synthetic seed 0, 2021-01 -> 2021-02;
``ctx.source == "tlc"``: the real green files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from workbook.exercises.build import CheckFailed
from workbook.exercises.context import Context

TRAIN_MONTH, VAL_MONTH = "2021-01", "2021-02"
#: The row cap of exercises 1 and 3 (``--rows``): small, so the trees fit in seconds.
SMALL_ROWS, TREE_ROWS = 10_000, 20_000
#: Exercise 4's ridge alphas.
ALPHAS = (0.1, 1.0, 10.0)


def prepared(ctx: Context, month: str, n_rows: int | None = None) -> pd.DataFrame:
    """``load_prepared_month`` of level 2 (what ``level2 train`` reads)."""
    from level2_devops.training import load_prepared_month

    return ctx.memo(f"month:{month}:{n_rows}", lambda: load_prepared_month(
        month, settings=ctx.settings, source=ctx.source, n_rows=n_rows))


def trained(ctx: Context, model: str = "linear", params: dict[str, Any] | None = None,
            n_rows: int | None = None) -> dict[str, float]:
    """Train and validation RMSE of ``level2 train --model MODEL --param … --rows N``."""
    def run() -> dict[str, float]:
        from level2_devops.training import evaluate, fit_model

        train, val = (prepared(ctx, m, n_rows) for m in (TRAIN_MONTH, VAL_MONTH))
        pipeline = fit_model(model, train, params)
        return {"train": evaluate(pipeline, train)["rmse"], "val": evaluate(pipeline, val)["rmse"]}

    return ctx.memo(f"trained:{model}:{sorted((params or {}).items())}:{n_rows}", run)


def small_kept_rows(ctx: Context) -> int:
    """1a: training trips kept of the first 10,000 (``--rows 10000``)."""
    return len(prepared(ctx, TRAIN_MONTH, SMALL_ROWS))


def small_linear_val_rmse(ctx: Context) -> float:
    """1b: validation RMSE of the default model trained with ``--rows 10000``."""
    return trained(ctx, n_rows=SMALL_ROWS)["val"]


def linear_val_rmse(ctx: Context) -> float:
    """2a: validation RMSE of the default ``level2 train`` (linear, whole months)."""
    return trained(ctx)["val"]


def tight_val_rmse(ctx: Context) -> float:
    """2b: the same with ``--param tol=1e-8``."""
    return trained(ctx, params={"tol": 1e-8})["val"]


def hist_gb_val_rmse(ctx: Context) -> float:
    """3a: validation RMSE of ``--model hist_gb --rows 20000``."""
    return trained(ctx, "hist_gb", n_rows=TREE_ROWS)["val"]


def random_forest_val_rmse(ctx: Context) -> float:
    """3b: validation RMSE of ``--model random_forest --rows 20000``."""
    return trained(ctx, "random_forest", n_rows=TREE_ROWS)["val"]


def _ridges(ctx: Context) -> dict[float, float]:
    return {alpha: trained(ctx, "ridge", {"alpha": alpha})["val"] for alpha in ALPHAS}


def best_ridge_alpha(ctx: Context) -> str:
    """4a: the alpha (of 0.1, 1 and 10) with the lowest validation RMSE."""
    ridges = _ridges(ctx)
    return f"{min(ridges, key=ridges.__getitem__):g}"


def best_ridge_val_rmse(ctx: Context) -> float:
    """4b: its validation RMSE."""
    return min(_ridges(ctx).values())


def clipped_rmse_change(ctx: Context) -> float:
    """8b: validation RMSE of ``--model linear_clipped`` minus that of ``--model linear``; the
    clipped model is the reference solution's (distance clipped at 100 miles, then the one-hot
    features), fitted here without the catalogue entry."""
    from sklearn.linear_model import LinearRegression

    from taxi_common.metrics import rmse
    from taxi_common.prepare import FEATURE_COLUMNS, TARGET

    def run() -> float:
        train, val = (prepared(ctx, m) for m in (TRAIN_MONTH, VAL_MONTH))
        pipeline = clipped_pipeline(LinearRegression())
        pipeline.fit(train[list(FEATURE_COLUMNS)], train[TARGET].to_numpy())
        return rmse(val[TARGET], pipeline.predict(val[list(FEATURE_COLUMNS)]))

    return ctx.memo("clipped", run) - trained(ctx)["val"]


def clip_distance(trips: pd.DataFrame, miles: float = 100.0) -> pd.DataFrame:
    """The trips with ``trip_distance`` clipped at ``miles``."""
    return trips.assign(trip_distance=trips["trip_distance"].clip(upper=miles))


def clipped_pipeline(regressor: Any) -> Any:
    """``Pipeline(featurize=[clip at 100 miles, TripFeaturizer], regress=regressor)``."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from taxi_common.features import TripFeaturizer

    featurize = Pipeline([("clip", FunctionTransformer(clip_distance)),
                          ("one_hot", TripFeaturizer())])
    return Pipeline([("featurize", featurize), ("regress", regressor)])


# --- the build tasks ------------------------------------------------------------------------------

def _small_model_file(folder: Path, model: str = "linear") -> tuple[Path, pd.DataFrame]:
    """A model trained on 3,000 synthetic trips, saved by level 2's model store with metadata."""
    from level2_devops.model_store import save_model
    from level2_devops.training import fit_model, load_prepared_month
    from taxi_common.settings import Settings

    train = load_prepared_month(TRAIN_MONTH, settings=Settings.from_env(), n_rows=3000)
    path = save_model(fit_model(model, train), {"model": model, "val_rmse": 8.5}, folder)
    return path, train


def check_model_endpoint(root: Path) -> str:
    """7a: ``GET /model`` answers 200 with the served model file's metadata JSON; ``/health``
    and ``/predict`` still work."""
    import json
    import tempfile

    from level2_devops.app import create_app
    from level2_devops.model_store import metadata_path
    from level2_devops.service.model_source import ModelFileSource

    with tempfile.TemporaryDirectory() as folder:
        path, _ = _small_model_file(Path(folder))
        client = create_app(ModelFileSource(path)).test_client()
        response = client.get("/model")
        if response.status_code != 200:
            raise CheckFailed(f"GET /model answers {response.status_code}, not 200: add the "
                              "route to the ops blueprint of level2_devops/app.py")
        body = response.get_json(silent=True)
        expected = json.loads(metadata_path(path).read_text())
        if body != expected:
            got = sorted(body) if isinstance(body, dict) else type(body).__name__
            raise CheckFailed(f"GET /model returns {got}, not the model's metadata JSON "
                              f"(keys {sorted(expected)})")
        if client.get("/health").status_code != 200:
            raise CheckFailed("GET /health no longer answers 200")
        ride = {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 1.2}
        if client.post("/predict", json=ride).status_code != 200:
            raise CheckFailed("POST /predict no longer answers 200")
    return f"GET /model returns the metadata of {expected['version']} ({len(expected)} keys)"


def check_clipped_model(root: Path) -> str:
    """8a: the catalogue has ``linear_clipped``: a linear model on distances clipped at 100
    miles, which ``fit_model`` trains and ``save_model`` can pickle."""
    import pickle

    from level2_devops.models import MODELS
    from level2_devops.training import fit_model
    from taxi_common.errors import BadInputError
    from taxi_common.prepare import FEATURE_COLUMNS

    if "linear_clipped" not in MODELS:
        raise CheckFailed("the catalogue (level2_devops/models.py MODELS) has no "
                          f"'linear_clipped' model: it has {', '.join(MODELS)}")
    with __import__("tempfile").TemporaryDirectory() as folder:
        try:
            path, train = _small_model_file(Path(folder), "linear_clipped")
        except BadInputError as exc:
            raise CheckFailed(f"fit_model('linear_clipped') fails: {exc}") from exc
        pipeline = pickle.loads(path.read_bytes())
    trips = pd.DataFrame({"PULocationID": [74, 74, 74, 74], "DOLocationID": [75, 75, 75, 75],
                          "trip_distance": [5.0, 100.0, 500.0, 150_000.0]})
    minutes = pipeline.predict(trips[list(FEATURE_COLUMNS)])
    if not (minutes[1] == minutes[2] == minutes[3]):
        raise CheckFailed(f"100, 500 and 150,000 miles predict {minutes[1]:.2f}, "
                          f"{minutes[2]:.2f} and {minutes[3]:.2f} minutes: clip the distance at "
                          "100 miles before the features")
    if abs(minutes[1] - minutes[0]) < 1.0:
        raise CheckFailed("5 and 100 miles predict nearly the same: the model does not use the "
                          "distance (is the clip before the one-hot features?)")
    linear = fit_model("linear", train)
    if abs(linear.predict(trips[list(FEATURE_COLUMNS)])[0] - minutes[0]) < 1e-9:
        raise CheckFailed("linear_clipped predicts exactly what linear predicts")
    return (f"linear_clipped: 5 miles {minutes[0]:.1f} min, 100 miles and more "
            f"{minutes[1]:.1f} min")
