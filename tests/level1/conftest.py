"""Fixtures for the level-1 notebook tests: one small synthetic execution shared by the session."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from taxi_common.settings import Settings

#: Rows per month for the shared synthetic run: enough for every cell, fast to execute.
SMALL_ROWS = 8_000
#: What the caller's environment holds while the notebooks run; it must hold it again afterwards.
SENTINEL_HOME = "/nonexistent/caller-workbook-home"


@dataclass(frozen=True)
class Level1Run:
    """One execution of both notebooks and what the test needs to check it."""

    settings: Settings
    n_rows: int
    sentinel_home: str
    output_dir: Path
    table: pd.DataFrame
    environ_after: dict[str, str | None]


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Level1Run:
    """Both notebooks executed once on SMALL_ROWS synthetic trips per month.

    The caller's WORKBOOK_HOME is a sentinel and TLC_BASE_URL is unset during the run, so the
    tests can tell that the kernel got the settings and that the caller's environment came back.
    """
    from level1_notebooks.runner import run_level1

    root = tmp_path_factory.mktemp("level1")
    settings = Settings(workbook_home=root / "workbook")
    output_dir = root / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBOOK_HOME", SENTINEL_HOME)
        mp.delenv("TLC_BASE_URL", raising=False)
        table = run_level1(settings=settings, n_rows=SMALL_ROWS, output_dir=output_dir,
                           progress=False)
        environ_after = {name: os.environ.get(name) for name in ("WORKBOOK_HOME", "TLC_BASE_URL")}
    return Level1Run(settings, SMALL_ROWS, SENTINEL_HOME, output_dir, table, environ_after)
