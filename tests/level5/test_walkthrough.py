"""The level-5 notebook executes with papermill on a short simulation: the policy, the loop, a
drift detected and recovered after a person's approval, a bad promotion rolled back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.notebooks import committed_clean

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "level5_automation" / "walkthrough.ipynb"
#: Two weeks: congestion from day 5, the bad promotion on day 11 (rolled back by day 13).
SHORT = {"days": 14, "onset": "2021-01-05", "bad_promotion": "2021-01-11",
         "rows_per_day": 1000}


def test_the_notebook_ships_in_the_wheel() -> None:
    from level2_devops.release import expected_wheel_files

    assert "level5_automation/walkthrough.ipynb" in expected_wheel_files(ROOT)


def test_notebook_is_committed_clean() -> None:
    defaults = committed_clean(NOTEBOOK, SHORT)
    assert defaults["workbook_home"] == ""


@pytest.mark.slow
def test_notebook_shows_drift_approval_recovery_and_rollback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import papermill

    for name in ("MLFLOW_TRACKING_URI", "DATABASE_URL", "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)  # the kernel inherits os.environ
    home = tmp_path / "workbook"
    out = tmp_path / "walkthrough.out.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), kernel_name="python3",
                               progress_bar=False, cwd=str(tmp_path),
                               parameters={"workbook_home": str(home), **SHORT})
    summary = json.loads((home / "walkthrough-summary.json").read_text())
    kinds = summary["kinds"]
    assert kinds.index("alert") < kinds.index("pending") < kinds.index("approve")
    approved, forced = summary["promotions"]
    assert approved["approved"] and approved["version"] == summary["approved"][0]
    assert "2021-01-05" < approved["day"] <= "2021-01-12"  # within a week of the onset
    assert forced["forced"] and forced["day"] == SHORT["bad_promotion"]
    [rollback] = summary["rollbacks"]
    assert rollback["rolled_back"] == forced["version"]
    assert rollback["version"] == approved["version"]
    assert rollback["day"] <= "2021-01-14"
    assert summary["days"][-1]["champion"] == approved["version"]  # served again after it
    served = [d for d in summary["days"] if d["champion"] == approved["version"] and d["rmse"]]
    assert served, "no labelled day served by the approved champion"
    loop = sum(d["rmse"] for d in served) / len(served)
    frozen = sum(d["frozen_rmse"] for d in served) / len(served)
    assert loop < 0.97 * frozen  # the approved challenger serves the congested city better
    nb = json.loads(out.read_text())
    images = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]
              if "image/png" in o.get("data", {})]
    assert len(images) == 1
