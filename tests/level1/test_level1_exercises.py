"""The model figures of level1_notebooks/EXERCISES.md's exercises 1, 3 and 4, fitted directly.

Exercises 3 and 4 edit ``LinearRegression()`` in a copy of ``02-train.ipynb``; here the same
recipe is fitted on the same default data (synthetic, seed 0, whole months 2021-01 -> 2021-02).
``TripFeaturizer`` builds exactly the notebook's DictVectorizer matrix (tests/taxi_common) and
level 2 scores exactly what the notebook scores (tests/level2/test_refactoring.py). The solvers
stop early, so these are the ``figures`` tests that ``make test`` runs with one and with two BLAS
threads; fitted directly, that second pass costs seconds, not a notebook run (the CLI test checks
exercise 1 through the notebook itself).
"""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.linear_model import Lasso, LinearRegression, Ridge

from taxi_common.data import load_trips
from taxi_common.features import TripFeaturizer
from taxi_common.metrics import rmse
from taxi_common.prepare import prepare_trips
from taxi_common.settings import Settings
from tests.figures import (
    SYNTHETIC_BEST,
    SYNTHETIC_BEST_VAL_RMSE,
    SYNTHETIC_CLIPPED_DISTANCE_COEF,
    SYNTHETIC_CLIPPED_INTERCEPT,
    SYNTHETIC_CLIPPED_LINEAR_TRAIN_RMSE,
    SYNTHETIC_CLIPPED_LINEAR_VAL_RMSE,
    SYNTHETIC_INTERCEPT,
    SYNTHETIC_LINEAR_TRAIN_RMSE,
    SYNTHETIC_LINEAR_VAL_RMSE,
    SYNTHETIC_MAX_DISTANCE,
    SYNTHETIC_PU_DO_COLUMNS,
    SYNTHETIC_SEPARATE_VAL_RMSE,
    SYNTHETIC_TIGHT_LINEAR_TRAIN_RMSE,
    SYNTHETIC_TIGHT_LINEAR_VAL_RMSE,
)

pytestmark = [pytest.mark.slow, pytest.mark.figures]


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The default run's prepared training and validation months."""
    settings = Settings(workbook_home=tmp_path_factory.mktemp("exercises") / "workbook")
    return tuple(prepare_trips(load_trips(month, settings=settings))
                 for month in ("2021-01", "2021-02"))


#: The notebook's three models (``make_models``).
MODELS = {"linear": LinearRegression, "lasso": lambda: Lasso(alpha=0.001, max_iter=2000),
          "ridge": lambda: Ridge(alpha=1.0)}


def _fit(train: pd.DataFrame, val: pd.DataFrame, model: object | None = None,
         combine_zones: bool = True) -> dict[str, float]:
    """Fit ``model`` (default ``LinearRegression()``) on the notebook's PU_DO matrix (or PU+DO):
    its RMSE, intercept and distance coefficient."""
    model = model if model is not None else LinearRegression()
    featurizer = TripFeaturizer(combine_zones=combine_zones).fit(train)
    x_train, x_val = featurizer.transform(train), featurizer.transform(val)
    model.fit(x_train, train["duration"])
    distance = list(featurizer.get_feature_names_out()).index("trip_distance")
    return {"columns": x_train.shape[1],
            "train": rmse(train["duration"], model.predict(x_train)),
            "val": rmse(val["duration"], model.predict(x_val)),
            "intercept": model.intercept_, "distance_coef": model.coef_[distance]}


def test_exercise_1_the_rmse_table_of_the_six_models(months) -> None:
    val = {(features, name): _fit(*months, make(), combine_zones=features == "PU_DO")
           for features in ("PU+DO", "PU_DO") for name, make in MODELS.items()}
    assert val["PU_DO", "linear"]["val"] == SYNTHETIC_LINEAR_VAL_RMSE.approx()
    assert val["PU_DO", "linear"]["train"] == SYNTHETIC_LINEAR_TRAIN_RMSE.approx()
    assert min(val, key=lambda row: val[row]["val"]) == SYNTHETIC_BEST
    assert val[SYNTHETIC_BEST]["val"] == SYNTHETIC_BEST_VAL_RMSE.approx()
    for name in MODELS:
        assert val["PU+DO", name]["val"] == SYNTHETIC_SEPARATE_VAL_RMSE.approx(), name


def test_exercise_3_a_converged_solver_fits_january_better_and_february_worse(months) -> None:
    default, tight = _fit(*months), _fit(*months, LinearRegression(tol=1e-8))
    assert default["columns"] == SYNTHETIC_PU_DO_COLUMNS
    assert default["val"] == SYNTHETIC_LINEAR_VAL_RMSE.approx()
    assert tight["val"] == SYNTHETIC_TIGHT_LINEAR_VAL_RMSE.approx()
    assert tight["train"] == SYNTHETIC_TIGHT_LINEAR_TRAIN_RMSE.approx()
    assert tight["train"] < default["train"] and tight["val"] > default["val"]


def test_exercise_4_clipping_the_distance_lets_the_model_use_it(months) -> None:
    train, val = months
    assert round(train["trip_distance"].max()) == SYNTHETIC_MAX_DISTANCE
    default = _fit(train, val)
    clipped = _fit(*(m.assign(trip_distance=m["trip_distance"].clip(upper=100)) for m in months))
    assert abs(default["distance_coef"]) < 1e-3  # "about 0.00001": no effect of distance
    assert default["intercept"] == SYNTHETIC_INTERCEPT.approx()
    assert clipped["val"] == SYNTHETIC_CLIPPED_LINEAR_VAL_RMSE.approx()
    assert clipped["train"] == SYNTHETIC_CLIPPED_LINEAR_TRAIN_RMSE.approx()
    assert clipped["distance_coef"] == SYNTHETIC_CLIPPED_DISTANCE_COEF.approx()
    assert clipped["intercept"] == SYNTHETIC_CLIPPED_INTERCEPT.approx()
