"""``mlops-levels level1 run``: the real command, in a subprocess, on the default synthetic data.

The default run is the one the README's exercises are about, so this test also checks the
exercise answers that a plain run prints (keep them in step with level1_notebooks/README.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

#: README exercise answers (synthetic, seed 0, 2021-01 → 2021-02, whole months).
ANSWER_PU_DO_LINEAR_VAL_RMSE = "8.2701"  # exercise 1
ANSWER_BEST = ("PU_DO", "ridge", "8.1675")  # exercise 1
ANSWER_KEPT = "kept 74,475 of 77,471 trips (96.1%)"  # exercise 2
ANSWER_BUSIEST_PAIR = ("74", "75", "1044", "7.82")  # exercise 2: trips, median minutes


def _printed(path: Path) -> str:
    """Everything the code cells of an executed notebook printed."""
    nb = nbformat.read(path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WORKBOOK_HOME": str(home)}
    env.pop("TLC_BASE_URL", None)
    return subprocess.run([sys.executable, "-m", "workbook.cli", "level1", *args], env=env,
                          capture_output=True, text=True, timeout=900)


def test_run_prints_the_rmse_table_and_writes_the_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _cli("run", "--output-dir", str(out), home=tmp_path / "home")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["features", "model"])
    rows = [line.split() for line in lines[header + 1:header + 7]]
    assert [r[:2] for r in rows] == [[f, m] for f in ("PU+DO", "PU_DO")
                                     for m in ("linear", "lasso", "ridge")]
    table = pd.read_csv(out / "rmse.csv")
    assert [r[3] for r in rows] == [f"{v:.4f}" for v in table["val_rmse"]]
    assert f"in {out}" in lines[-1]
    assert (out / "model.bin").exists()
    assert "Executing" in result.stderr  # papermill's progress bar

    assert rows[3][3] == ANSWER_PU_DO_LINEAR_VAL_RMSE
    best = min(rows, key=lambda r: float(r[3]))
    assert (best[0], best[1], best[3]) == ANSWER_BEST
    explore = _printed(out / "01-explore.ipynb")
    assert ANSWER_KEPT in explore
    pair_lines = [line.split() for line in explore.splitlines()
                  if line.split()[:2] == list(ANSWER_BUSIEST_PAIR[:2])]
    assert pair_lines and pair_lines[0][-3:-1] == list(ANSWER_BUSIEST_PAIR[2:])


def test_a_bad_source_ends_in_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = _cli("run", "--source", "s3", home=tmp_path / "home")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unknown data source 's3': use one of synthetic, tlc"
    assert not (tmp_path / "home").exists()
