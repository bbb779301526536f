"""The level-4 notebook executes with papermill on small data: two versions trained by level 3's
flow, the service started on the registry with an A/B split, a replayed day, a promotion the
service follows, the A/B report, monitoring; and every process it started is stopped, also when
a cell fails."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taxi_common.local_servers import stop_process_group
from tests.notebooks import committed_clean

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "level4_deployment" / "walkthrough.ipynb"
#: Small enough for about a minute: one synthetic day of ~400 trips, 300 of them replayed.
SMALL = {"baseline_rows": 1500, "candidate_rows": 4000, "candidate_models": "linear,ridge",
         "trials": 2, "replay_days": "1", "replay_rows": 12000, "max_requests": 300,
         "rate": 1000.0, "min_samples": 100, "peeking_repeats": 50, "open_dashboard": False}
VERDICTS = {"challenger better", "challenger worse", "no significant difference"}


def test_the_notebook_ships_in_the_wheel() -> None:
    from level2_devops.release import expected_wheel_files

    assert "level4_deployment/walkthrough.ipynb" in expected_wheel_files(ROOT)


def test_notebook_is_committed_clean() -> None:
    defaults = committed_clean(NOTEBOOK, SMALL)
    assert defaults["open_dashboard"] is True and defaults["workbook_home"] == ""


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _started(home: Path) -> list[dict[str, Any]]:
    path = home / "walkthrough-processes.json"
    return json.loads(path.read_text()) if path.exists() else []


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The notebook's WORKBOOK_HOME; afterwards, any process group it left behind is stopped."""
    for name in ("MLFLOW_TRACKING_URI", "DATABASE_URL"):  # the kernel inherits os.environ
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "workbook"
    try:
        yield path
    finally:
        for process in _started(path):
            stop_process_group(int(process["pid"]), timeout=10)


def _execute(home: Path, **parameters: Any) -> Path:
    import papermill

    out = home.parent / "walkthrough.out.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), kernel_name="python3",
                               progress_bar=False, cwd=str(home.parent),
                               parameters={"workbook_home": str(home), **parameters})
    return out


def _text(executed: Path) -> str:
    nb = json.loads(executed.read_text())
    return "\n".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                     for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"])


@pytest.mark.slow
def test_notebook_serves_deploys_and_monitors(home: Path, prefect_api: str) -> None:
    text = _text(_execute(home, **SMALL))
    summary = json.loads((home / "walkthrough-summary.json").read_text())

    assert summary["versions"] == {"first": "1", "second": "2"}
    replay = summary["replay"]
    assert replay["sent"] == SMALL["max_requests"] and replay["failed"] == 0
    assert replay["ok"] + replay["rejected"] == replay["sent"] and replay["ok"] > 250
    logged = summary["logged"]
    assert logged["total"] == replay["ok"]  # graceful stop: every answer is in the log
    assert logged["by_variant"] == replay["variants"]
    assert set(logged["by_variant"]) == {"champion", "challenger"}
    assert logged["by_version"] == {"1": logged["by_variant"]["champion"],
                                    "2": logged["by_variant"]["challenger"]}

    deploy = summary["deploy"]
    assert deploy["promoted"] and deploy["aliases"] == {"champion": "2", "previous": "1"}
    assert deploy["served_after"] == "2" and 0 <= deploy["follow_seconds"] < 30
    assert "gate passed" in text and "the service serves version 2" in text

    ab = summary["ab"]
    assert ab["min_samples"] == SMALL["min_samples"]
    assert ab["analysed_per_variant"] == SMALL["min_samples"] and ab["verdict"] in VERDICTS
    assert min(ab["variants"].values()) >= SMALL["min_samples"]
    assert set(ab["variants"]) == {"champion", "challenger"}
    assert 0 <= summary["peeking"]["fixed_horizon"] <= summary["peeking"]["peeking"] <= 1

    monitoring = summary["monitoring"]
    assert monitoring["days"] == ["2021-03-01"] == monitoring["metric_days"]
    assert 0 < monitoring["rows"]["2021-03-01"] <= logged["by_variant"]["champion"]
    assert all(Path(p).stat().st_size > 100_000 for p in monitoring["html"])
    assert summary["dashboard_url"] is None  # open_dashboard=False starts no UI

    assert [p["name"] for p in summary["processes"]] == ["service"]  # the session's Prefect
    assert not any(_alive(int(p["pid"])) for p in summary["processes"])


@pytest.mark.slow
def test_processes_are_stopped_when_a_cell_fails(home: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """No PREFECT_API_URL: the notebook starts a Prefect server; then training refuses its
    input. The kernel's exit (papermill shuts it down after the error) stops the server, before
    this test's fixture would: it was sent SIGTERM, so it is gone within seconds."""
    import papermill

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(papermill.PapermillExecutionError, match="--rows 0"):
        _execute(home, **{**SMALL, "baseline_rows": 0})
    started = _started(home)
    assert [p["name"] for p in started] == ["prefect server"]
    assert _gone_within(int(started[0]["pid"]), 30)
