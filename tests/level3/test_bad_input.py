"""Bad input through the real CLI: one clear error line, exit code 2, nothing half-registered."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taxi_common.data import load_trips
from taxi_common.local_servers import free_port
from taxi_common.settings import Settings
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
TRAIN = ("level3", "train", "--train-months", "2021-01", "--val-month", "2021-02",
         "--models", "linear", "--trials", "1", "--rows", "2000")


def assert_one_line_error(done: Any, *fragments: str) -> str:
    """Exit code 2, stderr ending in one ``error: …`` line holding ``fragments``, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in last, last
    return last


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def broken_mirror(tmp_path: Path, settings: Settings) -> Iterator[str]:
    """A TLC mirror whose 2021-01 and 2021-02 files have trip_distance as text (bad schema)."""
    def as_text(df: Any) -> Any:
        return df.assign(trip_distance=df["trip_distance"].map(lambda d: f"{d:.2f} mi"))

    yield from _mirror(tmp_path, settings, as_text)


@pytest.fixture
def wrong_month_mirror(tmp_path: Path, settings: Settings) -> Iterator[str]:
    """A TLC mirror whose 2021-01 and 2021-02 files hold the trips of a year later."""
    import pandas as pd

    def a_year_later(df: Any) -> Any:
        later = pd.DateOffset(years=1)
        return df.assign(lpep_pickup_datetime=df["lpep_pickup_datetime"] + later,
                         lpep_dropoff_datetime=df["lpep_dropoff_datetime"] + later)

    yield from _mirror(tmp_path, settings, a_year_later)


def _mirror(tmp_path: Path, settings: Settings, change: Callable[[Any], Any]) -> Iterator[str]:
    """Serve 500 synthetic trips of 2021-01 and 2021-02, each month passed through ``change``,
    as a TLC mirror on 127.0.0.1; yields its URL."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    for month in ("2021-01", "2021-02"):
        df = change(load_trips(month, settings=settings, n_rows=500))
        df.to_parquet(folder / f"green_tripdata_{month}.parquet", index=False)
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_unknown_model_name(settings: Settings, run_cli: Callable[..., Any],
                            registered_versions: Callable[[Settings], list[str]]) -> None:
    done = run_cli("level3", "train", "--train-months", "2021-01", "--val-month", "2021-02",
                   "--models", "linear,gradient_magic", settings=settings)
    assert_one_line_error(done, "unknown model 'gradient_magic'", "hist_gb")
    assert registered_versions(settings) == []


@pytest.mark.tlc
def test_unpublished_month(tlc_settings: Settings, prefect_api: str,
                           run_cli: Callable[..., Any],
                           registered_versions: Callable[[Settings], list[str]]) -> None:
    done = run_cli("level3", "train", "--train-months", "2031-01", "--val-month", "2021-02",
                   "--source", "tlc", "--models", "linear", settings=tlc_settings)
    assert_one_line_error(done, "2031-01", "not published")
    assert registered_versions(tlc_settings) == []


def test_month_that_fails_validation(settings: Settings, broken_mirror: str, prefect_api: str,
                                     run_cli: Callable[..., Any],
                                     registered_versions: Callable[[Settings], list[str]]) -> None:
    done = run_cli(*TRAIN, "--source", "tlc", settings=settings,
                   extra_env={"TLC_BASE_URL": broken_mirror})
    assert_one_line_error(done, "trip_distance", "2021-01")
    assert registered_versions(settings) == []


def test_a_file_of_another_month(settings: Settings, wrong_month_mirror: str,
                                 prefect_api: str, run_cli: Callable[..., Any],
                                 registered_versions: Callable[[Settings], list[str]]) -> None:
    """The mirror's 2021-01 file holds 2022-01's trips (every data fault through every
    pipeline: tests/workbook/test_data_faults.py)."""
    done = run_cli(*TRAIN, "--source", "tlc", settings=settings,
                   extra_env={"TLC_BASE_URL": wrong_month_mirror, "PYTHONPATH": str(REPO_ROOT)})
    assert_one_line_error(done, "500 of 500 trips (100%) were picked up outside 2021-01",
                          "is this the 2021-01 file?")
    assert registered_versions(settings) == []


def test_unreachable_tracking_server(settings: Settings, prefect_api: str,
                                     run_cli: Callable[..., Any]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    done = run_cli(*TRAIN, settings=settings, extra_env={"MLFLOW_TRACKING_URI": dead},
                   timeout=60)
    assert_one_line_error(done, "MLflow tracking server", dead, "not reachable")
    assert not (settings.workbook_home / "mlflow.db").exists()
    for command in (("level3", "promote", "1"), ("level3", "models")):
        done = run_cli(*command, settings=settings, extra_env={"MLFLOW_TRACKING_URI": dead},
                       timeout=60)
        assert_one_line_error(done, "not reachable")


def test_unreachable_prefect_api(settings: Settings, run_cli: Callable[..., Any]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/api"
    done = run_cli(*TRAIN, settings=settings, extra_env={"PREFECT_API_URL": dead}, timeout=60)
    assert_one_line_error(done, "Prefect API", dead, "not reachable")
    assert not (settings.workbook_home / "mlflow.db").exists()


def test_promote_unknown_version(settings: Settings, run_cli: Callable[..., Any]) -> None:
    done = run_cli("level3", "promote", "42", settings=settings)
    assert_one_line_error(done, "taxi-duration has no version 42")


def test_train_months_may_be_listed_with_spaces(run_cli, settings: Settings) -> None:
    """`--train-months 2021-01 2021-02` (the documented form) reads both months: proven by the
    check that refuses a validation month that is also a training month."""
    done = run_cli("level3", "train", "--train-months", "2021-01", "2021-02", "--val-month",
                   "2021-02", "--models", "linear", settings=settings)
    assert_one_line_error(done, "validation month 2021-02 is also a training month")
