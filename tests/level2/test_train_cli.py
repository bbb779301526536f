"""``mlops-levels level2 train``: options, progress, the printed summary, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from level2_devops.model_store import load_model
from workbook.cli import app


def _invoke(args: list[str], home: Path, base_url: str | None = None):
    env = {"WORKBOOK_HOME": str(home)}
    if base_url:
        env["TLC_BASE_URL"] = base_url
    return CliRunner().invoke(app, ["level2", "train", *args], env=env)


def _summary(output: str) -> dict[str, str]:
    """The ``key: value`` lines the command prints at the end."""
    lines = output.strip().splitlines()
    summary = dict(line.split(": ", 1) for line in lines[-3:-1])
    rmse = lines[-1].split()
    summary["train_rmse"], summary["val_rmse"] = rmse[2], rmse[5]
    return summary


@pytest.mark.parametrize(("args", "message"), [
    (["--train-month", "2021-13"], "month '2021-13' is not of the form YYYY-MM"),
    (["--val-month", "21-02"], "month '21-02' is not of the form YYYY-MM"),
    (["--model", "xgboost"], "unknown model 'xgboost': use one of linear, ridge"),
    (["--model", "ridge", "--param", "alfa=1"], "unknown parameter alfa for model ridge"),
    (["--param", "fit_intercept"], "is not of the form key=value"),
    (["--source", "s3"], "unknown data source 's3': use one of synthetic, tlc"),
    (["--rows", "0"], "--rows must be a positive number"),
])
def test_a_bad_option_is_one_line_and_exit_code_2(tmp_path, args, message) -> None:
    result = _invoke(args, tmp_path)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "models").exists()


@pytest.mark.tlc
def test_an_unpublished_month_is_one_line_and_exit_code_2(tmp_path, tlc_mirror) -> None:
    result = _invoke(["--source", "tlc", "--train-month", "2030-01"], tmp_path, tlc_mirror)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and "2030-01" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.tlc
def test_train_on_the_real_files_prints_progress_and_the_summary(tmp_path, tlc_mirror) -> None:
    models = tmp_path / "elsewhere"
    result = _invoke(["--source", "tlc", "--train-month", "2021-01", "--val-month", "2021-02",
                      "--model", "ridge", "--param", "alpha=0.5", "--rows", "5000",
                      "--models-dir", str(models)], tmp_path / "home", tlc_mirror)
    assert result.exit_code == 0, result.output
    for step in ("loading 2021-01 (tlc, green, first 5,000 rows)", "loading 2021-02",
                 "fitting ridge on", "evaluating", f"saving to {models}"):
        assert step in result.output
    summary = _summary(result.output)
    assert summary["model"] == str(models / "taxi-duration-v1.pkl")
    assert summary["version"] == "v1"
    _, meta = load_model(Path(summary["model"]))
    assert meta["params"] == {"alpha": 0.5}
    assert meta["data"]["train"]["raw_rows"] == 5_000
    assert summary["val_rmse"] == f"{meta['metrics']['val_rmse']:.4f}"
    assert summary["train_rmse"] == f"{meta['metrics']['train_rmse']:.4f}"


def test_train_on_synthetic_data_by_default_into_the_workbook_home(tmp_path) -> None:
    first = _invoke(["--rows", "2000"], tmp_path)
    second = _invoke(["--rows", "2000"], tmp_path)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert _summary(first.output)["model"] == str(tmp_path / "models" / "taxi-duration-v1.pkl")
    assert _summary(second.output)["version"] == "v2"
    # same data and seed: the same model quality
    assert _summary(first.output)["val_rmse"] == _summary(second.output)["val_rmse"]
    _, meta = load_model(tmp_path / "models" / "taxi-duration-v2.pkl")
    assert meta["data"]["source"] == "synthetic" and meta["data"]["seed"] == 0


def test_the_level2_cli_module_imports_no_heavy_library() -> None:
    """``mlops-levels --help`` must stay fast: sklearn and pandas load inside the commands."""
    code = ("import sys, level2_devops.cli; "
            "print(sorted(m for m in ('sklearn', 'pandas', 'flask') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_train_help_lists_the_options() -> None:
    result = CliRunner().invoke(app, ["level2", "train", "--help"])
    assert result.exit_code == 0
    for option in ("--train-month", "--val-month", "--source", "--model", "--param", "--rows",
                   "--seed", "--color", "--models-dir"):
        assert option in result.output
