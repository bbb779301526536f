"""The level-1 notebooks on the real TLC months 2021-01 → 2021-02, served by the local mirror."""

from __future__ import annotations

from pathlib import Path

import pytest

from level1_notebooks.runner import NotebookError, run_level1
from taxi_common.settings import Settings

pytestmark = [pytest.mark.tlc, pytest.mark.slow]


def _val_rmse(table, features: str, model: str) -> float:
    row = table[(table["features"] == features) & (table["model"] == model)]
    assert len(row) == 1
    return float(row["val_rmse"].iloc[0])


def test_real_months_give_the_reference_rmse(tlc_settings: Settings, tmp_path: Path) -> None:
    table = run_level1(settings=tlc_settings, source="tlc", output_dir=tmp_path / "out",
                       progress=False)
    assert _val_rmse(table, "PU_DO", "linear") == pytest.approx(7.7587, abs=1e-4)
    assert _val_rmse(table, "PU+DO", "linear") == pytest.approx(10.499, abs=1e-3)
    pu_do_train = table.query("features == 'PU_DO' and model == 'linear'")["train_rmse"]
    assert float(pu_do_train.iloc[0]) == pytest.approx(5.6996, abs=1e-4)
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
