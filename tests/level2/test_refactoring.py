"""The refactoring proof: level 2's package trains what level 1's notebook trains.

The level-1 notebook (``02-train.ipynb``, executed with papermill by ``run_level1``) is the
classic DictVectorizer recipe, written inline; level 2 is the same recipe as tested functions.
On the same data, the PU_DO models must score the same, to 1e-9 minutes.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from level1_notebooks.runner import run_level1
from level2_devops.training import evaluate, fit_model, load_prepared_month
from taxi_common.settings import Settings
from tests.figures import REAL_LINEAR_VAL_RMSE

MODELS = ("linear", "ridge", "lasso")  # the notebook's three models, the catalogue's defaults


def _level1_table(settings: Settings, source: str, n_rows: int | None,
                  output_dir: Path) -> pd.DataFrame:
    """The notebook's RMSE table for 2021-01 -> 2021-02, indexed by (features, model)."""
    table = run_level1(settings=settings, source=source, color="green", train_month="2021-01",
                       val_month="2021-02", n_rows=n_rows, output_dir=output_dir,
                       progress=False)
    assert (output_dir / "rmse.csv").is_file()
    return table.set_index(["features", "model"])


def _level2_scores(settings: Settings, source: str, n_rows: int | None,
                   models: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Train and validation RMSE of each model trained by the level-2 package."""
    train = load_prepared_month("2021-01", settings=settings, source=source, n_rows=n_rows)
    val = load_prepared_month("2021-02", settings=settings, source=source, n_rows=n_rows)
    scores = {}
    for name in models:
        pipeline = fit_model(name, train)
        scores[name] = {"train_rmse": evaluate(pipeline, train)["rmse"],
                        "val_rmse": evaluate(pipeline, val)["rmse"]}
    return scores


@pytest.mark.slow
def test_package_equals_the_level1_notebook_on_synthetic_data(settings, tmp_path) -> None:
    table = _level1_table(settings, "synthetic", 3_000, tmp_path / "level1")
    scores = _level2_scores(settings, "synthetic", 3_000, MODELS)
    for name in MODELS:
        notebook = table.loc[("PU_DO", name)]
        assert scores[name]["val_rmse"] == pytest.approx(notebook["val_rmse"], abs=1e-9), name
        assert scores[name]["train_rmse"] == pytest.approx(notebook["train_rmse"], abs=1e-9), name


@pytest.mark.tlc
@pytest.mark.slow
def test_package_equals_the_level1_notebook_on_the_real_files(tlc_settings, tmp_path) -> None:
    table = _level1_table(tlc_settings, "tlc", None, tmp_path / "level1")
    scores = _level2_scores(tlc_settings, "tlc", None, ("linear",))
    notebook = table.loc[("PU_DO", "linear")]
    assert scores["linear"]["val_rmse"] == pytest.approx(notebook["val_rmse"], abs=1e-9)
    assert scores["linear"]["train_rmse"] == pytest.approx(notebook["train_rmse"], abs=1e-9)
    assert scores["linear"]["val_rmse"] == REAL_LINEAR_VAL_RMSE.approx()
    assert notebook["val_rmse"] == REAL_LINEAR_VAL_RMSE.approx()
