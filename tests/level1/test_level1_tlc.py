"""The level-1 notebooks on the real TLC months 2021-01 → 2021-02, served by the local mirror."""

from __future__ import annotations

from pathlib import Path

import pytest

from level1_notebooks.runner import NotebookError, run_level1
from taxi_common.settings import Settings
from tests.figures import (
    REAL_BASELINE_TRAIN_RMSE,
    REAL_BASELINE_VAL_RMSE,
    REAL_LINEAR_TRAIN_RMSE,
    REAL_LINEAR_VAL_RMSE,
    REAL_SEPARATE_LINEAR_VAL_RMSE,
)

pytestmark = [pytest.mark.tlc, pytest.mark.slow]

BASELINES = {"mean": "none", "median": "PU_DO", "speed": "distance+hour"}


def _rmse(table, features: str, model: str, column: str = "val_rmse") -> float:
    row = table[(table["features"] == features) & (table["model"] == model)]
    assert len(row) == 1
    return float(row[column].iloc[0])


def test_real_months_give_the_reference_rmse(tlc_settings: Settings, tmp_path: Path) -> None:
    table = run_level1(settings=tlc_settings, source="tlc", output_dir=tmp_path / "out",
                       progress=False)
    assert _rmse(table, "PU_DO", "linear") == REAL_LINEAR_VAL_RMSE.approx()
    assert _rmse(table, "PU+DO", "linear") == REAL_SEPARATE_LINEAR_VAL_RMSE.approx()
    assert _rmse(table, "PU_DO", "linear", "train_rmse") == REAL_LINEAR_TRAIN_RMSE.approx()
    # The baselines are pure pandas: exact figures.
    for name, features in BASELINES.items():
        assert _rmse(table, features, name) == REAL_BASELINE_VAL_RMSE[name].approx(), name
        assert (_rmse(table, features, name, "train_rmse")
                == REAL_BASELINE_TRAIN_RMSE[name].approx()), name
    # On the real months too, the PU_DO linear regression beats every baseline, and the
    # PU+DO one does not even beat the distance / typical-speed rule of thumb.
    baselines = {name: _rmse(table, features, name) for name, features in BASELINES.items()}
    assert _rmse(table, "PU_DO", "linear") < min(baselines.values())
    assert _rmse(table, "PU+DO", "linear") > baselines["speed"]
    # The kernel downloaded through the mirror into this WORKBOOK_HOME: it saw the settings.
    for month in ("2021-01", "2021-02"):
        assert (tlc_settings.data_cache_dir / f"green_tripdata_{month}.parquet").exists()


def test_an_unpublished_month_fails_in_one_line_naming_the_notebook(
    tlc_settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with pytest.raises(NotebookError) as info:
        run_level1(settings=tlc_settings, source="tlc", train_month="2019-05", output_dir=out,
                   progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("notebook 01-explore.ipynb failed in cell")
    assert "DataUnavailableError" in message and "2019-05" in message
    assert str(out / "01-explore.ipynb") in message
