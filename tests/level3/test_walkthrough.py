"""The level-3 notebook executes with papermill on small data and ends with a promoted champion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "level3_training" / "walkthrough.ipynb"

pytestmark = pytest.mark.slow


def test_notebook_is_committed_clean() -> None:
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def test_notebook_runs_the_flow_and_promotes(tmp_path: Path, prefect_api: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import papermill

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the kernel inherits os.environ
    out = tmp_path / "walkthrough.out.ipynb"
    home = tmp_path / "workbook"
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), kernel_name="python3", progress_bar=False, cwd=str(tmp_path),
        parameters={"workbook_home": str(home), "n_rows": 2000, "models": "linear,ridge",
                    "trials": 2})
    executed = json.loads(out.read_text())
    text = "\n".join(
        "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
        for c in executed["cells"] if c["cell_type"] == "code" for o in c["outputs"])
    assert "registered version: 1 as @challenger" in text
    assert "1 parent, 2 candidates, 3 trials" in text
    assert "{'champion': '1', 'previous': None}" in text
    assert any(o.get("data", {}).get("image/png") for c in executed["cells"]
               if c["cell_type"] == "code" for o in c["outputs"]), "no chart"
    assert (home / "mlflow.db").exists()
