"""Level 1's answers, recomputed: the recipe of ``02-train.ipynb`` on the default months.

The default run is whole months 2021-01 -> 2021-02 (synthetic seed 0, or the real green files
with ``ctx.source == "tlc"``). ``TripFeaturizer`` builds exactly the notebook's DictVectorizer
matrix (tests/taxi_common), so fitting the notebook's models on it gives the notebook's figures;
the baselines repeat the notebook's three pandas rules. The figures of ``LinearRegression()`` and
``Ridge()`` move with the BLAS (see the README's "Why your fourth decimal may differ"): the key's
tolerances cover that.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbook.exercises.build import CheckFailed
from workbook.exercises.context import Context

TRAIN_MONTH, VAL_MONTH = "2021-01", "2021-02"
PICKUP, DROPOFF = "lpep_pickup_datetime", "lpep_dropoff_datetime"
#: The notebook's three models (``make_models``), by name.
MODELS = ("linear", "lasso", "ridge")
CLIP_MILES = 100


def _make(name: str, **params: Any) -> Any:
    from sklearn.linear_model import Lasso, LinearRegression, Ridge

    if name == "linear":
        return LinearRegression(**params)
    if name == "lasso":
        return Lasso(alpha=0.001, max_iter=2000)
    return Ridge(alpha=1.0)


def raw_month(ctx: Context, month: str) -> pd.DataFrame:
    """The raw trips of ``month`` (whole month, green)."""
    from taxi_common.data import load_trips

    return ctx.memo(f"raw:{month}", lambda: load_trips(month, settings=ctx.settings,
                                                       source=ctx.source))


def months(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The prepared training and validation months (duration, 1-60 minute filter)."""
    from taxi_common.prepare import prepare_trips

    return ctx.memo("months", lambda: tuple(prepare_trips(raw_month(ctx, m))
                                            for m in (TRAIN_MONTH, VAL_MONTH)))


def fit(ctx: Context, model: str = "linear", features: str = "PU_DO", tol: float | None = None,
        clip: bool = False) -> dict[str, float]:
    """Fit one of the notebook's models: train and validation RMSE, columns, the distance
    coefficient (minutes per mile) and the intercept."""
    def run() -> dict[str, float]:
        from taxi_common.features import TripFeaturizer
        from taxi_common.metrics import rmse

        train, val = months(ctx)
        if clip:
            train, val = (m.assign(trip_distance=m["trip_distance"].clip(upper=CLIP_MILES))
                          for m in (train, val))
        regressor = _make(model, **({"tol": tol} if tol is not None else {}))
        featurizer = TripFeaturizer(combine_zones=features == "PU_DO").fit(train)
        x_train, x_val = featurizer.transform(train), featurizer.transform(val)
        regressor.fit(x_train, train["duration"])
        distance = list(featurizer.get_feature_names_out()).index("trip_distance")
        return {"columns": x_train.shape[1],
                "train": rmse(train["duration"], regressor.predict(x_train)),
                "val": rmse(val["duration"], regressor.predict(x_val)),
                "intercept": float(regressor.intercept_),
                "distance_coef": float(regressor.coef_[distance])}

    return ctx.memo(f"fit:{model}:{features}:{tol}:{clip}", run)


def _table(ctx: Context) -> dict[str, float]:
    """Validation RMSE of the six models, keyed ``"<features> <model>"``."""
    return {f"{features} {model}": fit(ctx, model, features)["val"]
            for features in ("PU+DO", "PU_DO") for model in MODELS}


# --- exercise 1 ---------------------------------------------------------------------------------

def linear_val_rmse(ctx: Context) -> float:
    """1a: validation RMSE of the PU_DO ``LinearRegression()``."""
    return fit(ctx)["val"]


def best_model(ctx: Context) -> str:
    """1b: the features and model of the lowest validation RMSE."""
    table = _table(ctx)
    return min(table, key=table.__getitem__)


def best_val_rmse(ctx: Context) -> float:
    """1c: the lowest validation RMSE of the six models."""
    return min(_table(ctx).values())


# --- exercise 2: the 1-60 minute filter and the busiest zone pair ---------------------------------

def kept_trips(ctx: Context) -> int:
    """2a: trips of the training month that last 1-60 minutes."""
    return len(months(ctx)[0])


def kept_percent(ctx: Context) -> float:
    """2b: their share of the month's trips, in percent (printed with one decimal)."""
    return round(100 * len(months(ctx)[0]) / len(raw_month(ctx, TRAIN_MONTH)), 1)


def _busiest_pair(ctx: Context) -> pd.Series:
    train = months(ctx)[0]
    pairs = (train.groupby(["PULocationID", "DOLocationID"], observed=True)["duration"]
             .agg(["size", "median"]).sort_values("size", ascending=False, kind="stable"))
    return pairs.iloc[0]


def busiest_pair_trips(ctx: Context) -> int:
    """2c: trips of the busiest zone pair of the kept training trips."""
    return int(_busiest_pair(ctx)["size"])


def busiest_pair_median(ctx: Context) -> float:
    """2d: its median duration, minutes (printed with two decimals)."""
    return round(float(_busiest_pair(ctx)["median"]), 2)


# --- exercises 3 and 4: the solver's tolerance, the clipped distance -----------------------------

def tight_val_rmse(ctx: Context) -> float:
    """3a: validation RMSE of the PU_DO ``LinearRegression(tol=1e-8)``."""
    return fit(ctx, tol=1e-8)["val"]


def tight_train_rmse(ctx: Context) -> float:
    """3b: its training RMSE."""
    return fit(ctx, tol=1e-8)["train"]


def clipped_val_rmse(ctx: Context) -> float:
    """4b: validation RMSE of the PU_DO ``LinearRegression()`` with distances clipped at 100."""
    return fit(ctx, clip=True)["val"]


def clipped_distance_coef(ctx: Context) -> float:
    """4c: its ``trip_distance`` coefficient, minutes per mile."""
    return fit(ctx, clip=True)["distance_coef"]


# --- exercise 5: hidden state ---------------------------------------------------------------------

def rows_after_rerun(ctx: Context) -> int:
    """5a: rows of rmse.csv after re-running the PU+DO cell: one per model of ``make_models``
    (that cell starts from ``results = []``), read from the notebook itself."""
    from sklearn import linear_model

    namespace: dict[str, Any] = dict(vars(linear_model))
    exec(compile(_function_source(_notebook(), "make_models"), "02-train.ipynb", "exec"),
         namespace)
    return len(namespace["make_models"]())


def pu_do_columns(ctx: Context) -> int:
    """5b: features of the PU_DO DictVectorizer still in model.bin (pairs + trip_distance)."""
    from taxi_common.features import TripFeaturizer

    return len(TripFeaturizer().fit(months(ctx)[0]).get_feature_names_out())


# --- exercise 7: is machine learning the right approach? ----------------------------------------

def _baselines(ctx: Context) -> dict[str, float]:
    """Validation RMSE of the notebook's three baselines (pure pandas, exact)."""
    def run() -> dict[str, float]:
        from taxi_common.metrics import rmse

        train, val = (m.assign(PU_DO=m["PULocationID"].astype(str) + "_"
                               + m["DOLocationID"].astype(str)) for m in months(ctx))
        y = train["duration"]
        pair, pickup = y.groupby(train["PU_DO"]).median(), y.groupby(train["PULocationID"],
                                                                     observed=True).median()
        moving = train[train["trip_distance"] > 0]
        speed = moving["trip_distance"] / moving["duration"]
        hourly = speed.groupby(moving[PICKUP].dt.hour).median()
        median = (val["PU_DO"].map(pair).fillna(val["PULocationID"].astype(object).map(pickup))
                  .fillna(y.median()))
        typical = val[PICKUP].dt.hour.map(hourly).fillna(speed.median())
        predictions = {"mean": np.full(len(val), y.mean()),
                       "median": median.to_numpy(dtype=float),
                       "speed": (val["trip_distance"] / typical).clip(1, 60).to_numpy()}
        return {name: rmse(val["duration"], p) for name, p in predictions.items()}

    return ctx.memo("baselines", run)


def mean_baseline(ctx: Context) -> float:
    """7a: the mean training duration for every trip."""
    return round(_baselines(ctx)["mean"], 4)


def median_baseline(ctx: Context) -> float:
    """7b: the zone pair's median (then the pickup zone's, then the overall median)."""
    return round(_baselines(ctx)["median"], 4)


def speed_baseline(ctx: Context) -> float:
    """7c: the distance over the median speed of the pickup hour, clipped to 1-60 minutes."""
    return round(_baselines(ctx)["speed"], 4)


def gain_over_best_baseline(ctx: Context) -> float:
    """7d: how many minutes of validation RMSE the best model gains over the best baseline."""
    return min(_baselines(ctx).values()) - best_val_rmse(ctx)


# --- the build task of exercise 4: clip the distance in read_dataframe ---------------------------

def _notebook(root: Path | None = None) -> Any:
    import nbformat

    from workbook.exercises.keys import REPO_ROOT

    return nbformat.read(Path(root or REPO_ROOT) / "level1_notebooks" / "02-train.ipynb",
                         as_version=4)


def _function_source(notebook: Any, name: str) -> str:
    """The source of the function ``name`` defined in one of the notebook's code cells."""
    for cell in notebook.cells:
        if cell.cell_type != "code" or f"def {name}(" not in cell.source:
            continue
        tree = ast.parse(cell.source)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return ast.get_source_segment(cell.source, node) or ""
    raise CheckFailed(f"02-train.ipynb defines no function {name}(): restore it from git")


def check_clipped_distance(root: Path) -> str:
    """4a: ``read_dataframe`` in ``root``'s 02-train.ipynb clips trip_distance at 100 miles and
    still keeps exactly the 1-60 minute trips."""
    from taxi_common.data import load_trips
    from taxi_common.settings import Settings

    source = _function_source(_notebook(root), "read_dataframe")
    namespace: dict[str, Any] = {"pd": pd, "np": np, "pickup": PICKUP, "dropoff": DROPOFF}
    try:
        exec(compile(source, "02-train.ipynb: read_dataframe", "exec"), namespace)
    except SyntaxError as exc:
        raise CheckFailed(f"read_dataframe does not compile: {exc.msg} (line {exc.lineno})"
                          ) from exc
    raw = load_trips(TRAIN_MONTH, settings=Settings.from_env(), n_rows=2000)
    raw.loc[:9, "trip_distance"] = [150.0, 1000.0, 5e4, 101.0, 99.0, 0.0, 3.5, 250.0, 12.0, 7e3]
    duration = (raw[DROPOFF] - raw[PICKUP]).dt.total_seconds() / 60
    expected = raw[(duration >= 1) & (duration <= 60)]
    got = namespace["read_dataframe"](raw)
    if len(got) != len(expected):
        raise CheckFailed(f"read_dataframe keeps {len(got)} of 2,000 trips, the 1-60 minute "
                          f"filter keeps {len(expected)}: clip the distance, keep the filter")
    if got["trip_distance"].max() > CLIP_MILES:
        raise CheckFailed(f"read_dataframe leaves a distance of {got['trip_distance'].max():,g} "
                          f"miles: clip trip_distance at {CLIP_MILES}")
    unclipped = expected["trip_distance"].clip(upper=CLIP_MILES).to_numpy()
    if not np.allclose(got["trip_distance"].to_numpy(), unclipped):
        raise CheckFailed("read_dataframe changes distances under 100 miles too: clip only the "
                          "ones above")
    return f"read_dataframe keeps {len(got)} of 2,000 trips, none over {CLIP_MILES} miles"
