"""nbval on executed copies: the cells marked ``# NBVAL_CHECK_OUTPUT`` (the lesson) reproduce.

The notebooks are committed without outputs, so nbval has nothing to compare against in them.
It runs instead on the copies papermill executed on small synthetic data (see ``synthetic_run``):
nbval re-executes each copy and compares the marked cells' outputs with the stored ones.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from level1_notebooks.runner import NOTEBOOKS

pytestmark = pytest.mark.slow

MARKER = "# NBVAL_CHECK_OUTPUT"


def _copy_for_nbval(executed: Path, dest_dir: Path, output_dir: Path) -> tuple[Path, int, int]:
    """Copy an executed notebook, pointing its ``output_dir`` parameter at ``output_dir``.

    Returns the copy, its number of code cells and its number of checked cells.
    """
    nb = nbformat.read(executed, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = re.sub(r"^output_dir = .*$", f"output_dir = {str(output_dir)!r}",
                                 cell.source, flags=re.M)
    copy = dest_dir / executed.name
    nbformat.write(nb, copy)
    return copy, len(code), sum(MARKER in c.source for c in code)


def _run_nbval(paths: list[Path], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WORKBOOK_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
         *map(str, paths), "-p", "no:cacheprovider", "-q"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


def test_lesson_cells_reproduce_under_nbval(synthetic_run, tmp_path: Path) -> None:
    copies, n_code, n_checked = [], 0, 0
    for name in NOTEBOOKS:
        copy, code, checked = _copy_for_nbval(synthetic_run.output_dir / name, tmp_path,
                                              tmp_path / "out")
        assert checked >= 3, f"{name} marks only {checked} cells with {MARKER}"
        copies.append(copy)
        n_code, n_checked = n_code + code, n_checked + checked
    result = _run_nbval(copies, tmp_path, synthetic_run.settings.workbook_home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert re.search(rf"\b{n_code} passed\b", result.stdout), result.stdout[-1000:]
    assert (tmp_path / "out" / "rmse.csv").exists()


def test_nbval_catches_a_changed_lesson_output(synthetic_run, tmp_path: Path) -> None:
    copy, _, _ = _copy_for_nbval(synthetic_run.output_dir / "01-explore.ipynb", tmp_path,
                                 tmp_path / "out")
    nb = nbformat.read(copy, as_version=4)
    checked = next(c for c in nb.cells if c.cell_type == "code" and MARKER in c.source)
    stream = next(o for o in checked.outputs if o.output_type == "stream")
    stream.text = stream.text.replace(",", ";", 1) + "a line the code does not print\n"
    nbformat.write(nb, copy)
    result = _run_nbval([copy], tmp_path, synthetic_run.settings.workbook_home)
    assert result.returncode == 1, result.stdout[-2000:]
    assert re.search(r"\b1 failed\b", result.stdout), result.stdout[-1000:]
