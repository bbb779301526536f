"""``mlops-levels level1 run``: the real command, in a subprocess, on the default synthetic data.

The default run is the one the exercises (EXERCISES.md) are about, so this test also checks the
exercise answers that a plain run prints (the figures live in tests/figures.py; keep them in step
with level1_notebooks/README.md and solutions/level1.yaml). The linear models' figures hold to a
tolerance (their solvers stop early, where depends on the BLAS kernel and thread count); the counts
and baselines exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from tests.figures import (
    SYNTHETIC_BASELINE_VAL_RMSE,
    SYNTHETIC_BEST,
    SYNTHETIC_BEST_VAL_RMSE,
    SYNTHETIC_BUSIEST_PAIR,
    SYNTHETIC_KEPT,
    SYNTHETIC_LINEAR_TRAIN_RMSE,
    SYNTHETIC_LINEAR_VAL_RMSE,
    SYNTHETIC_SEPARATE_VAL_RMSE,
)

pytestmark = pytest.mark.slow

#: The rows of the RMSE table, in order: six models, then three baselines.
MODEL_ROWS = tuple((f, m) for f in ("PU+DO", "PU_DO") for m in ("linear", "lasso", "ridge"))
BASELINE_ROWS = (("none", "mean"), ("PU_DO", "median"), ("distance+hour", "speed"))
TABLE_ROWS = MODEL_ROWS + BASELINE_ROWS


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
    rows = [line.split() for line in lines[header + 1:header + 1 + len(TABLE_ROWS)]]
    assert [tuple(r[:2]) for r in rows] == list(TABLE_ROWS)
    table = pd.read_csv(out / "rmse.csv")
    assert [r[3] for r in rows] == [f"{v:.4f}" for v in table["val_rmse"]]
    assert f"in {out}" in lines[-1]
    assert (out / "model.bin").exists()
    assert "Executing" in result.stderr  # papermill's progress bar

    by_row = table.set_index(["features", "model"])
    val, train = by_row["val_rmse"], by_row["train_rmse"]
    # exercise 1
    assert val["PU_DO", "linear"] == SYNTHETIC_LINEAR_VAL_RMSE.approx()
    assert train["PU_DO", "linear"] == SYNTHETIC_LINEAR_TRAIN_RMSE.approx()
    models = {key: val[key] for key in MODEL_ROWS}
    assert min(models, key=models.__getitem__) == SYNTHETIC_BEST
    assert models[SYNTHETIC_BEST] == SYNTHETIC_BEST_VAL_RMSE.approx()
    for model in ("linear", "lasso", "ridge"):
        assert val["PU+DO", model] == SYNTHETIC_SEPARATE_VAL_RMSE.approx()
    # exercise 2
    explore = _printed(out / "01-explore.ipynb")
    assert SYNTHETIC_KEPT in explore
    pair_lines = [line.split() for line in explore.splitlines()
                  if line.split()[:2] == list(SYNTHETIC_BUSIEST_PAIR[:2])]
    assert pair_lines and pair_lines[0][-3:-1] == list(SYNTHETIC_BUSIEST_PAIR[2:])
    # exercise 7
    for features, name in BASELINE_ROWS:
        assert val[features, name] == SYNTHETIC_BASELINE_VAL_RMSE[name].approx(), name


def test_a_bad_source_ends_in_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = _cli("run", "--source", "s3", home=tmp_path / "home")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unknown data source 's3': use one of synthetic, tlc"
    assert not (tmp_path / "home").exists()
