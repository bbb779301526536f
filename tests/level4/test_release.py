"""``level4 release``: level 3's training flow on a real Prefect server, then the gate, then the
promotion — one command from data to production, run as the real command (one process per
command, as a user runs it: Prefect's console logging is bound to the process's own streams)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from level3_training.registry import aliases, client_for
from level4_deployment.cli import app
from taxi_common.settings import Settings

pytestmark = pytest.mark.slow


MLOPS_LEVELS = Path(sys.executable).with_name("mlops-levels")


def _release(settings: Settings, prefect_api: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORKBOOK_HOME": str(settings.workbook_home),
           "PREFECT_API_URL": prefect_api}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([str(MLOPS_LEVELS), "level4", "release", "--rows", "3000",
                           "--trials", "1", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_release_trains_gates_and_promotes(settings: Settings, prefect_api: str) -> None:
    first = _release(settings, prefect_api, "--models", "linear,ridge", "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "Downloading artifacts" not in first.stderr  # no progress bar per model load
    assert "SHAP" not in first.stderr  # MLflow's evaluation notices stay out of the report
    report = json.loads(first.stdout)
    assert report["deploy"]["promoted"] and report["deploy"]["champion_version"] is None
    assert report["training"]["version"] == "1"
    assert aliases(client_for(settings.tracking_uri)) == {"champion": "1"}

    second = _release(settings, prefect_api, "--models", "ridge", "--margin", "0.05")
    assert second.returncode in (0, 1), second.stderr[-2000:]
    after = aliases(client_for(settings.tracking_uri))
    if second.returncode == 0:  # ridge alone is within 5 % of the best of linear and ridge
        assert "released: version 2 is @champion" in second.stdout
        assert after == {"champion": "2", "previous": "1"}
    else:
        assert "gate failed: rmse" in second.stdout
        assert after == {"champion": "1", "challenger": "2"}
    assert "candidate version 2 vs champion 1 on synthetic green 2021-03" in second.stdout


def test_release_rejects_bad_options_before_training(settings: Settings,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBOOK_HOME", str(settings.workbook_home))
    result = CliRunner().invoke(app, ["release", "--models", "linear,nope"])
    assert result.exit_code == 2 and "nope" in result.output
    assert not (settings.workbook_home / "mlflow.db").exists()
