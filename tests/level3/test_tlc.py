"""The flow on the real TLC files through the local mirror: the reference figures hold."""

from __future__ import annotations

import pytest

from level3_training.pipeline import TrainConfig, run_training
from level3_training.registry import alias_version, client_for, lineage
from taxi_common.settings import Settings
from tests.figures import (
    REAL_HIST_GB_VAL_RMSE,
    REAL_KEPT_ROWS,
    REAL_LINEAR_TRAIN_RMSE,
    REAL_LINEAR_VAL_RMSE,
    REAL_PU_DO_COLUMNS,
)

pytestmark = [pytest.mark.tlc, pytest.mark.slow]


def test_linear_candidate_matches_the_reference_and_the_best_beats_it(
        tlc_settings: Settings, prefect_api: str) -> None:
    config = TrainConfig(("2021-01",), "2021-02", source="tlc", models=("linear", "hist_gb"),
                         trials=1)
    summary = run_training(config, tlc_settings)
    by_name = {c["name"]: c for c in summary["candidates"]}
    assert by_name["linear"]["val_rmse"] == REAL_LINEAR_VAL_RMSE.approx()
    assert by_name["linear"]["train_rmse"] == REAL_LINEAR_TRAIN_RMSE.approx()
    assert summary["data"]["train_rows"] == REAL_KEPT_ROWS["2021-01"]
    assert summary["data"]["val_rows"] == REAL_KEPT_ROWS["2021-02"]
    assert summary["features"]["features_one_hot"] == REAL_PU_DO_COLUMNS
    assert summary["best"] == "hist_gb"
    assert summary["best_val_rmse"] < by_name["linear"]["val_rmse"]
    assert summary["best_val_rmse"] == REAL_HIST_GB_VAL_RMSE.approx()

    client = client_for(tlc_settings.tracking_uri)
    assert alias_version(client, "challenger") == summary["version"]
    info = lineage(client, summary["version"])
    assert info.tags["data.source"] == "tlc"
    assert info.tags["data.train_rows"] == str(REAL_KEPT_ROWS["2021-01"])
