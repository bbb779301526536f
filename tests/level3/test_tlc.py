"""The flow on the real TLC files through the local mirror: the reference figures hold."""

from __future__ import annotations

import pytest

from level3_training.pipeline import TrainConfig, run_training
from level3_training.registry import alias_version, client_for, lineage
from taxi_common.settings import Settings

pytestmark = [pytest.mark.tlc, pytest.mark.slow]


def test_linear_candidate_matches_the_reference_and_the_best_beats_it(
        tlc_settings: Settings, prefect_api: str) -> None:
    config = TrainConfig(("2021-01",), "2021-02", source="tlc", models=("linear", "hist_gb"),
                         trials=1)
    summary = run_training(config, tlc_settings)
    by_name = {c["name"]: c for c in summary["candidates"]}
    assert by_name["linear"]["val_rmse"] == pytest.approx(7.7587, abs=1e-4)
    assert by_name["linear"]["train_rmse"] == pytest.approx(5.6996, abs=1e-4)
    assert summary["data"]["train_rows"] == 73_908 and summary["data"]["val_rows"] == 61_921
    assert summary["features"]["features_one_hot"] == 13_221
    assert summary["best"] == "hist_gb"
    assert summary["best_val_rmse"] < by_name["linear"]["val_rmse"]
    assert summary["best_val_rmse"] == pytest.approx(6.19, abs=0.01)

    client = client_for(tlc_settings.tracking_uri)
    assert alias_version(client, "challenger") == summary["version"]
    info = lineage(client, summary["version"])
    assert info.tags["data.source"] == "tlc" and info.tags["data.train_rows"] == "73908"
