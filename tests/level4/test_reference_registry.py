"""The monitoring reference from the registry: the champion's own validation month and data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from level4_deployment.cli import app, default_reference_path
from level4_deployment.reference import load_reference, write_registry_reference
from taxi_common.errors import BadInputError
from taxi_common.settings import Settings


def test_champion_reference_uses_its_validation_month_and_row_cap(
        settings: Settings, registrar: Callable[..., str], pipelines: dict[str, Any]) -> None:
    from level4_deployment.traffic import month_traffic

    version = registrar(settings, "linear", "champion")
    path = write_registry_reference(settings, path=settings.workbook_home / "ref.parquet")
    ref = load_reference(path)
    assert (ref.model_version, ref.month) == (version, "2021-02")  # the tags of conftest.TAGS
    expected = month_traffic("2021-02", settings=settings, rows=4000)
    assert len(ref.frame) == len(expected)
    np.testing.assert_allclose(
        ref.frame["prediction"],
        pipelines["linear"].predict(expected[["PULocationID", "DOLocationID", "trip_distance"]]))
    with pytest.raises(BadInputError, match="has no @challenger"):
        write_registry_reference(settings, "challenger", path=path)


def test_reference_command_defaults_to_the_champion(
        settings: Settings, registrar: Callable[..., str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    registrar(settings, "ridge", "champion")
    monkeypatch.setenv("WORKBOOK_HOME", str(settings.workbook_home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(app, ["reference", "--rows", "3000"])
    assert result.exit_code == 0, result.output
    assert "trips of 2021-02, model 1" in result.output
    assert default_reference_path(settings).is_file()
    no_month = CliRunner().invoke(app, ["reference", "--model-file", "x.pkl"])
    assert no_month.exit_code == 2 and "needs --month" in no_month.output
