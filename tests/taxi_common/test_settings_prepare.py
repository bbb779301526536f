"""Settings from the environment, months, and the preparation recipe."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from taxi_common.errors import BadInputError, WorkbookError
from taxi_common.months import next_month, parse_month
from taxi_common.prepare import (
    add_duration,
    cast_zones,
    filter_outliers,
    input_columns,
    prepare_trips,
)
from taxi_common.scenarios import Scenario, as_scenario
from taxi_common.settings import TLC_PUBLIC_BASE_URL, Settings


def test_settings_defaults_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    default = Settings.from_env({})
    assert default.workbook_home == tmp_path.resolve() / ".workbook"
    assert default.tlc_base_url == TLC_PUBLIC_BASE_URL
    assert default.mlflow_tracking_uri is default.prefect_api_url is default.database_url is None
    assert default.tracking_uri == f"sqlite:///{default.workbook_home / 'mlflow.db'}"
    assert not default.workbook_home.exists(), "reading settings must not create directories"

    custom = Settings.from_env({"WORKBOOK_HOME": str(tmp_path / "h"), "TLC_BASE_URL": "file:///m/",
                                "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    assert custom.workbook_home == tmp_path / "h"
    assert custom.tlc_base_url == "file:///m"
    assert custom.tracking_uri == "http://127.0.0.1:5000"
    assert custom.prefect_home == tmp_path / "h" / "prefect"
    assert not (tmp_path / "h").exists(), "reading settings must not create directories"


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = Settings(workbook_home=tmp_path)
    with pytest.raises(AttributeError):
        settings.workbook_home = Path("/elsewhere")  # type: ignore[misc]
    assert settings.with_home(tmp_path / "x").workbook_home == tmp_path / "x"


@pytest.mark.parametrize("text", ["2021-1", "2021-13", "21-01", "2021/01", ""])
def test_bad_months_are_user_errors(text: str) -> None:
    with pytest.raises(BadInputError, match="YYYY-MM"):
        parse_month(text)


def test_months() -> None:
    assert parse_month("2021-02") == (2021, 2)
    assert next_month("2021-01") == "2021-02"
    assert next_month("2021-12") == "2022-01"


def test_scenarios_validate() -> None:
    assert as_scenario("congestion") == Scenario("congestion", 1, 1.0)
    for bad in ({"name": "rain"}, {"name": "baseline", "start_day": 0},
                {"name": "hotspot", "strength": -1}):
        with pytest.raises(WorkbookError):
            Scenario(**bad)


def test_prepare_recipe() -> None:
    raw = pd.DataFrame({
        "lpep_pickup_datetime": pd.to_datetime(["2021-01-01 00:00:00"] * 4),
        "lpep_dropoff_datetime": pd.to_datetime(
            ["2021-01-01 00:00:30", "2021-01-01 00:01:00", "2021-01-01 01:00:00",
             "2021-01-01 01:00:01"]),
        "PULocationID": [1, 2, 3, 4], "DOLocationID": [5, 6, 7, 8], "trip_distance": [0.1] * 4,
    })
    with_duration = add_duration(raw)
    assert with_duration["duration"].tolist() == pytest.approx([0.5, 1.0, 60.0, 60.0 + 1 / 60])
    kept = filter_outliers(with_duration)
    assert kept["PULocationID"].tolist() == [2, 3]  # both bounds inclusive
    prepared = prepare_trips(raw)
    assert prepared["PULocationID"].dtype == "category"
    assert prepared["PULocationID"].astype(str).tolist() == ["2", "3"]
    assert "duration" not in raw.columns, "preparation must not modify its input"
    assert cast_zones(raw)["DOLocationID"].cat.categories.tolist() == [5, 6, 7, 8]


def test_input_columns_are_all_preparation_reads() -> None:
    from taxi_common.synthetic import generate_month

    assert input_columns("green") == ["lpep_pickup_datetime", "lpep_dropoff_datetime",
                                      "PULocationID", "DOLocationID", "trip_distance"]
    assert input_columns("fhv") == ["pickup_datetime", "dropOff_datetime", "PUlocationID",
                                    "DOlocationID"]  # no distance in the fhv files
    raw = generate_month("2021-01", n_rows=5_000)
    full, narrow = prepare_trips(raw), prepare_trips(raw[input_columns("green")])
    assert list(narrow.columns) == [*input_columns("green"), "duration"]
    pd.testing.assert_frame_equal(narrow, full[list(narrow.columns)])


def test_unknown_source_is_refused_before_any_loading(settings: Settings) -> None:
    from taxi_common.data import check_source, load_trips

    assert check_source("tlc") == "tlc"
    with pytest.raises(BadInputError, match="unknown data source 's3': use one of synthetic, tlc"):
        load_trips("2021-01", settings=settings, source="s3")
    assert not settings.workbook_home.exists()
