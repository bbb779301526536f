"""``mlops-levels data download``: in process through typer's runner, and once as the real command
to check what a user sees on an error: one ``error: …`` line, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taxi_common.errors import BadInputError, DataUnavailableError
from taxi_common.local_servers import free_port
from taxi_common.settings import Settings
from taxi_common.sources import cached_path
from workbook.cli import app

COMMAND = Path(sys.executable).parent / "mlops-levels"


def _env(home: Path, base_url: str) -> dict[str, str]:
    return {"WORKBOOK_HOME": str(home), "TLC_BASE_URL": base_url}


def _closed_port_url() -> str:
    """A URL on a port that was free a moment ago: nobody listens there."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.tlc
def test_download_prints_the_cached_path(tmp_path: Path, tlc_mirror: str, tlc_dir: Path) -> None:
    home = tmp_path / "home"
    runner = CliRunner()
    args = ["data", "download", "--month", "2021-01"]
    result = runner.invoke(app, args, env=_env(home, tlc_mirror))
    assert result.exit_code == 0, result.output
    path = cached_path("green", "2021-01", Settings(workbook_home=home))
    assert result.stdout.strip() == str(path)
    assert path.read_bytes() == (tlc_dir / "green_tripdata_2021-01.parquet").read_bytes()
    # A second run is a cache hit: the same answer even with the mirror gone.
    again = runner.invoke(app, args, env=_env(home, _closed_port_url()))
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == str(path)


@pytest.mark.tlc
@pytest.mark.parametrize(("month", "error"), [("2021-13", BadInputError),
                                              ("2031-01", DataUnavailableError)])
def test_bad_month_raises_a_workbook_error(tmp_path: Path, tlc_mirror: str, month: str,
                                           error: type[Exception]) -> None:
    # In process the error reaches the runner; the console entry point turns it into one line.
    result = CliRunner().invoke(app, ["data", "download", "--month", month],
                                env=_env(tmp_path / "home", tlc_mirror))
    assert isinstance(result.exception, error)
    assert month in str(result.exception)
    assert result.stdout == ""
    assert not (tmp_path / "home").exists()


def test_month_is_required() -> None:
    result = CliRunner().invoke(app, ["data", "download"])
    assert result.exit_code == 2
    assert "--month" in result.output


@pytest.mark.parametrize(("month", "base", "expected"), [
    pytest.param("2021-13", "down", "error: month '2021-13' is not of the form YYYY-MM",
                 id="malformed-month"),
    pytest.param("2031-01", "mirror",
                 "error: green 2031-01 is not published by the TLC (HTTP 404 from",
                 id="unpublished-month", marks=pytest.mark.tlc),
    pytest.param("2021-01", "down", "error: cannot reach http://127.0.0.1:", id="server-down"),
])
def test_command_prints_one_error_line_and_exits_2(tmp_path: Path, request: pytest.FixtureRequest,
                                                   month: str, base: str, expected: str) -> None:
    home = tmp_path / "home"
    base_url = request.getfixturevalue("tlc_mirror") if base == "mirror" else _closed_port_url()
    env = {**os.environ, **_env(home, base_url), "NO_COLOR": "1"}
    proc = subprocess.run([str(COMMAND), "data", "download", "--month", month], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(expected)
    assert "Traceback" not in proc.stderr
    cache = Settings(workbook_home=home).data_cache_dir
    assert not cache.exists() or list(cache.iterdir()) == []
