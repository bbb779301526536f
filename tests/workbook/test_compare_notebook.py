"""The comparison notebook executes with papermill on a short period, and is committed clean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.notebooks import committed_clean

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "workbook" / "compare_levels.ipynb"
#: Three weeks, congestion from day 6, users complaining after 4 bad days: levels 1, 2 and 5.
SHORT = {"days": 21, "onset": "2021-01-06", "rows_per_day": 1200, "levels": "1,2,5",
         "assume": ["complaint_after_days=4", "notebook_handover_days=2"]}


def test_notebook_is_committed_clean_and_ships_in_the_wheel() -> None:
    from level2_devops.release import expected_wheel_files

    defaults = committed_clean(NOTEBOOK, SHORT)
    assert defaults["workbook_home"] == "" and defaults["days"] == 90
    assert "workbook/compare_levels.ipynb" in expected_wheel_files(ROOT)


@pytest.mark.slow
def test_notebook_compares_the_levels_with_its_charts(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import papermill

    for name in ("MLFLOW_TRACKING_URI", "DATABASE_URL", "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)  # the kernel inherits os.environ
    home = tmp_path / "home"  # not "workbook": the kernel's cwd is on the processes' sys.path
    out = tmp_path / "compare_levels.out.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), kernel_name="python3",
                               progress_bar=False, cwd=str(tmp_path),
                               parameters={"workbook_home": str(home), **SHORT})
    summary = json.loads((home / "compare-summary.json").read_text())
    levels = summary["levels"]
    assert sorted(levels) == ["1", "2", "5"]
    assert summary["assumptions"]["complaint_after_days"] == 4
    assert levels["5"]["mean_rmse_after_onset"] < levels["1"]["mean_rmse_after_onset"]
    assert levels["5"]["human_steps"] == 0 < levels["1"]["human_steps"]
    assert levels["1"]["traceable"] is False and levels["5"]["traceable"] is True
    assert Path(summary["report"]).is_file()
    nb = json.loads(out.read_text())
    images = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]
              if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the daily RMSE of every level, and the costs
