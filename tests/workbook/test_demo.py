"""`mlops-levels demo`: the levels run end to end on the same data and agree where they should."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taxi_common.settings import Settings
from workbook.cli import app
from workbook.demo import DemoOptions, format_results, metric_value, run_comparison, run_demo


@pytest.fixture
def restored_environ() -> Iterator[None]:
    """Put os.environ back afterwards: level 3 sets its defaults (PREFECT_HOME, MLFLOW_*) in it."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.slow
def test_demo_runs_the_five_levels_they_agree_and_compare(settings: Settings, monkeypatch,
                                                restored_environ: None) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("WORKBOOK_HOME", str(settings.workbook_home))
    options = DemoOptions(n_rows=3000, level3_models=("linear", "hist_gb"), trials=1)
    lines: list[str] = []
    level1, level2, level3 = run_demo(options, settings, echo=lines.append,
                                      levels=("1", "2", "3"))

    # Level 2 is level 1's recipe refactored: the same data gives the same validation RMSE.
    assert level2.val_rmse == pytest.approx(level1.val_rmse, abs=1e-9)
    # Level 3's flow trains that model again as its linear candidate, on the data it prepared
    # itself: the same RMSE says the flow reads and prepares the months as level 2 does.
    assert set(level3.candidates) == {"linear", "hist_gb"}
    assert level3.candidates["linear"] == pytest.approx(level2.val_rmse, abs=1e-9)
    # It keeps the candidate with the lowest validation RMSE, and names it: on these trips the
    # tree model, by minutes (10.32 against 7.25 when measured), not by rounding.
    best = min(level3.candidates, key=level3.candidates.__getitem__)
    assert best == "hist_gb"
    assert level3.model == "hist_gb (best of 2 candidates)"
    assert level3.val_rmse == level3.candidates["hist_gb"]
    assert level3.val_rmse < level2.val_rmse - 1.0
    assert level3.artifact == "models:/taxi-duration/1 @champion"
    assert (settings.workbook_home / "mlflow.db").is_file()
    assert any("gunicorn answered" in line for line in lines)
    assert 'taxi_predictions_total{model_version="1",variant="champion"} 1.0' in level2.notes[0]

    table = format_results([level1, level2, level3], options).splitlines()
    assert [line.split()[0] for line in table[2:5]] == ["1", "2", "3"]
    for line, result in zip(table[2:5], (level1, level2, level3), strict=True):
        assert f"{result.val_rmse:9.4f}" in line
    assert "models:/taxi-duration/1 @champion" in table[4]
    scores = ", ".join(f"{name} {rmse:.4f}" for name, rmse in level3.candidates.items())
    assert f"  level 3: candidates' val RMSE: {scores}" in table

    # Levels 4 and 5 on the same home: level 3's champion served with a challenger in an A/B
    # test, a day replayed, monitored, the challenger gated; then a short closed loop, and
    # the comparison of the five levels with its report.
    small = dataclasses.replace(options, replay_trips=600, simulate_days=12, compare_days=12)
    level4, level5 = run_demo(small, settings, echo=lines.append, levels=("4", "5"))
    assert level4.model == "A/B: champion vs v2 (ridge)"
    ab_note, monitoring_note, gate_note = level4.notes
    assert re.fullmatch(r"A/B on [\d,]+ labelled rides: not enough data.*", ab_note), ab_note
    assert "monitoring of 2021-03-01" in monitoring_note
    assert Path(monitoring_note.rsplit("report ", 1)[1]).is_file()
    assert gate_note.startswith("gate: v2 ")
    assert any(re.search(r"replayed 600 trips of 2021-03-01 to the A/B service: .*challenger",
                         line) for line in lines), lines
    assert Path(level5.artifact).is_file()
    assert re.match(r"\d+ alerts, \d+ retrains, \d+ promotions", level5.notes[0])
    table = format_results([level1, level2, level3, level4, level5], options).splitlines()
    assert [line.split()[0] for line in table[2:7]] == ["1", "2", "3", "4", "5"]
    comparison = run_comparison(small, settings, echo=lines.append)
    assert [line.split()[0] for line in comparison.splitlines()[2:7]] == [
        "L1", "L2", "L3", "L4", "L5"]
    page = settings.workbook_home / "report" / "index.html"
    assert comparison.endswith(f"the HTML report: {page}") and page.is_file()


def test_demo_rejects_unknown_levels() -> None:
    result = CliRunner().invoke(app, ["demo", "--levels", "9"])
    assert result.exit_code != 0
    assert "choose among 1, 2, 3, 4, 5" in str(result.exception) + result.output


def test_demo_error_is_one_line_from_the_console_script(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WORKBOOK_HOME"}  # default: ./.workbook
    result = subprocess.run([sys.executable, "-m", "workbook", "demo", "--levels", "7"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --levels '7': choose among 1, 2, 3, 4, 5"]
    assert not (tmp_path / ".workbook").exists(), "a refused command must not create state"


def test_metric_value_picks_the_sample_line() -> None:
    text = "# HELP taxi_predictions_total x\ntaxi_predictions_total{v=\"1\"} 3.0\n"
    assert metric_value(text, "taxi_predictions_total") == 'taxi_predictions_total{v="1"} 3.0'
    assert metric_value(text, "nothing") == "(no such metric)"


def test_help_lists_every_level_and_is_fast_to_import() -> None:
    result = subprocess.run(
        [sys.executable, "-c",
         "import sys, workbook.cli; heavy = {'sklearn', 'mlflow', 'prefect', 'evidently', "
         "'flask', 'papermill'} & set(sys.modules); print(sorted(heavy))"],
        capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", "the CLI must import heavy libraries lazily"
    help_text = CliRunner().invoke(app, ["--help"]).output
    help_text = re.sub(r"\x1b\[[0-9;]*m", "", help_text)  # colours, under FORCE_COLOR or CI
    listed = set(re.findall(r"^\W+ (\w+) {2,}\w", help_text, flags=re.M))
    assert listed >= {"data", "level1", "level2", "level3", "level4", "level5", "demo", "compare",
                      "ui", "exercises"}, help_text


def test_demo_reuses_a_background_prefect_server(settings: Settings, monkeypatch) -> None:
    """With a server recorded by `level3 server start` (here: a stand-in answering /api/health),
    the demo uses it instead of paying ~13 s for its own, and leaves the environment clean."""
    import http.server
    import json
    import threading

    from workbook.demo import _prefect_api

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api_url = f"http://127.0.0.1:{server.server_address[1]}/api"
    settings.prefect_home.mkdir(parents=True)
    (settings.prefect_home / "server.json").write_text(json.dumps({"pid": 1, "api_url": api_url}))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    lines: list[str] = []
    try:
        with _prefect_api(settings, lines.append):
            assert os.environ["PREFECT_API_URL"] == api_url
    finally:
        server.shutdown()
        server.server_close()
    assert lines == [f"  using the background Prefect server at {api_url}"]
    assert "PREFECT_API_URL" not in os.environ
