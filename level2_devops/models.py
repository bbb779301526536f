"""The model catalogue: every model is one Pipeline(featurizer, regressor) over raw trip columns.

Linear models read the one-hot PU_DO matrix (``TripFeaturizer``); tree models read the zone IDs
and distance as numbers (``ZoneNumberFeatures``). Level 3 searches the same catalogue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sklearn.pipeline import Pipeline

from taxi_common.errors import BadInputError


@dataclass(frozen=True)
class ModelSpec:
    """How to build one named model, its default parameters and its search space."""

    name: str
    make_regressor: Callable[..., Any]
    featurizer: str  # "one_hot" (TripFeaturizer) or "numeric" (ZoneNumberFeatures)
    defaults: dict[str, Any] = field(default_factory=dict)
    #: For random search: parameter name -> list of candidate values.
    search_space: dict[str, list[Any]] = field(default_factory=dict)


def _linear(**params: Any) -> Any:
    from sklearn.linear_model import LinearRegression

    return LinearRegression(**params)


def _ridge(**params: Any) -> Any:
    from sklearn.linear_model import Ridge

    return Ridge(**params)


def _lasso(**params: Any) -> Any:
    from sklearn.linear_model import Lasso

    return Lasso(**params)


def _random_forest(**params: Any) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(**params)


def _hist_gb(**params: Any) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(**params)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("linear", _linear, "one_hot"),
        ModelSpec("ridge", _ridge, "one_hot", {"alpha": 1.0},
                  {"alpha": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]}),
        ModelSpec("lasso", _lasso, "one_hot", {"alpha": 0.001, "max_iter": 2000},
                  {"alpha": [0.0003, 0.001, 0.003, 0.01, 0.03]}),
        ModelSpec("random_forest", _random_forest, "numeric",
                  {"n_estimators": 50, "max_depth": 20, "min_samples_leaf": 5, "n_jobs": 1,
                   "random_state": 0},
                  {"n_estimators": [30, 50, 100], "max_depth": [10, 15, 20, 30],
                   "min_samples_leaf": [1, 3, 5, 10]}),
        ModelSpec("hist_gb", _hist_gb, "numeric", {"max_iter": 300, "random_state": 0},
                  {"max_iter": [100, 200, 300, 500], "learning_rate": [0.03, 0.05, 0.1, 0.2],
                   "max_leaf_nodes": [15, 31, 63, 127], "min_samples_leaf": [10, 20, 50]}),
    )
}


def model_spec(name: str) -> ModelSpec:
    """The spec of ``name``; a clear error listing the known names otherwise."""
    if name not in MODELS:
        raise BadInputError(f"unknown model {name!r}: use one of {', '.join(MODELS)}")
    return MODELS[name]


def build_model(name: str, params: dict[str, Any] | None = None) -> Pipeline:
    """An unfitted ``Pipeline([("featurize", …), ("regress", …)])`` for model ``name``.

    ``params`` override the spec's defaults.
    """
    from taxi_common.features import TripFeaturizer, ZoneNumberFeatures

    spec = model_spec(name)
    featurizer = TripFeaturizer() if spec.featurizer == "one_hot" else ZoneNumberFeatures()
    regressor = spec.make_regressor(**{**spec.defaults, **(params or {})})
    return Pipeline([("featurize", featurizer), ("regress", regressor)])
