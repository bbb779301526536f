"""``run_level1``: both notebooks executed by papermill, results read back, one-line failures."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LinearRegression
from sklearn.metrics import root_mean_squared_error

from level1_notebooks.runner import NOTEBOOKS, NotebookError, run_level1
from taxi_common.data import load_trips
from taxi_common.errors import BadInputError
from taxi_common.prepare import prepare_trips

pytestmark = pytest.mark.slow

MODEL_ROWS = [(features, model) for features in ("PU+DO", "PU_DO")
              for model in ("linear", "lasso", "ridge")]
BASELINE_ROWS = [("none", "mean"), ("PU_DO", "median"), ("distance+hour", "speed")]
EXPECTED_ROWS = MODEL_ROWS + BASELINE_ROWS


def _code_cells(path: Path) -> list[nbformat.NotebookNode]:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_run_level1_returns_the_rmse_table_written_to_rmse_csv(synthetic_run) -> None:
    table = synthetic_run.table
    assert list(table.columns) == ["features", "model", "train_rmse", "val_rmse"]
    assert list(zip(table["features"], table["model"], strict=True)) == EXPECTED_ROWS
    for value in (*table["train_rmse"], *table["val_rmse"]):
        assert math.isfinite(value) and 0 < value < 60
    pd.testing.assert_frame_equal(table, pd.read_csv(synthetic_run.output_dir / "rmse.csv"))


def test_the_baselines_are_scored_on_the_same_split_and_the_models_beat_them(
    synthetic_run,
) -> None:
    table = synthetic_run.table.set_index(["features", "model"])["val_rmse"]
    baselines = table[BASELINE_ROWS]
    # The PU_DO models beat every baseline; every model beats the mean.
    for row in MODEL_ROWS[3:]:
        assert table[row] < baselines.min(), row
    for row in MODEL_ROWS:
        assert table[row] < table["none", "mean"], row
    # The mean baseline is the standard deviation of the validation month around the training
    # mean: recompute it from the data.
    train = prepare_trips(load_trips("2021-01", settings=synthetic_run.settings,
                                     n_rows=synthetic_run.n_rows))
    val = prepare_trips(load_trips("2021-02", settings=synthetic_run.settings,
                                   n_rows=synthetic_run.n_rows))
    expected = ((val["duration"] - train["duration"].mean()) ** 2).mean() ** 0.5
    assert table["none", "mean"] == pytest.approx(expected, rel=1e-12)


def test_the_notebook_says_what_the_gap_to_the_best_baseline_is(synthetic_run) -> None:
    table = synthetic_run.table.set_index(["features", "model"])["val_rmse"]
    models, baselines = table[MODEL_ROWS], table[BASELINE_ROWS]
    printed = "".join(o.get("text", "") for c in _code_cells(
        synthetic_run.output_dir / "02-train.ipynb") for o in c.outputs)
    best, best_baseline = models.idxmin(), baselines.idxmin()
    assert (f"best model:    {' '.join(best)}, validation RMSE {models.min():.2f}") in printed
    assert (f"best baseline: {' '.join(best_baseline)}, "
            f"validation RMSE {baselines.min():.2f}") in printed
    assert f"machine learning gains {baselines.min() - models.min():.2f} minutes" in printed
    no_better = [" ".join(row) for row in MODEL_ROWS if models[row] >= baselines.min()]
    assert (f"models no better than the best baseline: {', '.join(no_better) or 'none'}"
            in printed)


def test_rmse_csv_keeps_full_float_precision(synthetic_run) -> None:
    text = (synthetic_run.output_dir / "rmse.csv").read_text()
    values = [line.split(",")[3] for line in text.splitlines()[1:]]
    assert all(len(v.split(".")[1]) >= 10 for v in values), values


def test_pickled_model_is_the_pu_do_linear_regression_of_the_table(
    synthetic_run,
) -> None:
    with open(synthetic_run.output_dir / "model.bin", "rb") as f_in:
        dv, model = pickle.load(f_in)
    assert isinstance(dv, DictVectorizer) and isinstance(model, LinearRegression)
    assert any(name.startswith("PU_DO=") for name in dv.feature_names_)

    raw = load_trips("2021-02", settings=synthetic_run.settings, n_rows=synthetic_run.n_rows)
    val = prepare_trips(raw)
    dicts = [{"PU_DO": f"{pu}_{do}", "trip_distance": d} for pu, do, d in
             zip(val["PULocationID"], val["DOLocationID"], val["trip_distance"], strict=True)]
    rmse = root_mean_squared_error(val["duration"], model.predict(dv.transform(dicts)))
    row = synthetic_run.table.query("features == 'PU_DO' and model == 'linear'").iloc[0]
    assert rmse == pytest.approx(row["val_rmse"], abs=1e-9)


def test_executed_copies_hold_parameters_outputs_and_plots(synthetic_run) -> None:
    for name in NOTEBOOKS:
        path = synthetic_run.output_dir / name
        cells = _code_cells(path)
        injected = [c for c in cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1
        assert f"n_rows = {synthetic_run.n_rows}" in injected[0].source
        assert all(c.execution_count for c in cells), f"unexecuted cell in {name}"
        images = [o for c in cells for o in c.outputs if "image/png" in o.get("data", {})]
        assert images, f"{name} drew no plot"


def test_kernel_gets_the_settings_and_callers_environment_is_restored(
    synthetic_run,
) -> None:
    cells = _code_cells(synthetic_run.output_dir / "01-explore.ipynb")
    printed = "".join(o.get("text", "") for c in cells for o in c.outputs)
    assert f"WORKBOOK_HOME={synthetic_run.settings.workbook_home}" in printed
    assert synthetic_run.environ_after == {
        "WORKBOOK_HOME": synthetic_run.sentinel_home, "TLC_BASE_URL": None}


def test_committed_notebooks_have_no_outputs_a_parameters_cell_and_kernel_python3() -> None:
    from level1_notebooks.runner import NOTEBOOK_DIR

    for name in NOTEBOOKS:
        nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3"
        cells = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in cells), name
        tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1
        for parameter in ("source", "color", "train_month", "val_month", "n_rows", "output_dir"):
            assert f"\n{parameter} = " in "\n" + tagged[0].source


def test_a_failing_cell_raises_one_line_naming_notebook_cell_and_copy(
    settings, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    # Synthetic data exists for green taxis only: the loading cell of the first notebook fails.
    with pytest.raises(NotebookError) as info:
        run_level1(settings=settings, color="yellow", n_rows=1000, output_dir=out, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert "notebook 01-explore.ipynb failed in cell" in message
    assert "BadInputError: synthetic data follows the green taxi schema" in message
    assert str(out / "01-explore.ipynb") in message
    assert (out / "01-explore.ipynb").exists()
    assert not (out / "02-train.ipynb").exists()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({"source": "s3"}, "unknown data source 's3'"),
     ({"color": "fhv", "source": "tlc"}, "read green or yellow taxi trips, not 'fhv'"),
     ({"train_month": "2021-13"}, "2021-13"),
     ({"val_month": "Feb"}, "Feb"),
     ({"n_rows": 0}, "--rows must be a positive number")],
)
def test_bad_arguments_fail_before_any_kernel_starts(
    settings, tmp_path: Path, kwargs: dict, expected: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(BadInputError, match=expected):
        run_level1(settings=settings, output_dir=out, progress=False, **kwargs)
    assert not out.exists()
