"""Release automation: the steps stop at the first failure, the wheel installs and works on its
own, and the model bundle's manifest proves its members."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from level2_devops.metadata import build_metadata
from level2_devops.model_store import save_model
from level2_devops.release import (
    MANIFEST_NAME,
    PROJECT_ROOT,
    ReleaseError,
    ReleaseOptions,
    bundle,
    check_wheel,
    expected_wheel_files,
    run_release,
    verify_bundle,
    write_bundle,
)
from level2_devops.training import fit_model


@pytest.fixture
def model_file(prepared_trips, tmp_path) -> Path:
    """A small fitted model saved with metadata, as `level2 train` would."""
    pipeline = fit_model("linear", prepared_trips)
    meta = build_metadata(model="linear", params={}, data={"source": "hand-made"},
                          metrics={"val_rmse": 2.0})
    return save_model(pipeline, meta, tmp_path / "models")


@pytest.fixture
def broken_project(tmp_path) -> Path:
    """A tiny project whose lint fails: an unused import."""
    root = tmp_path / "broken"
    (root / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "broken"\nversion = "0.0.1"\n'
        '[tool.ruff.lint]\nselect = ["F"]\n')
    (root / "pkg" / "__init__.py").write_text("import os\n")
    return root


# --- the steps stop at the first failure ----------------------------------------------------------

def test_a_failing_lint_stops_the_release_before_the_build(broken_project) -> None:
    lines: list[str] = []
    options = ReleaseOptions(root=broken_project, skip_tests=True)
    with pytest.raises(ReleaseError, match="release step 'lint' failed.*ruff") as info:
        run_release(options, echo=lines.append)
    assert "\n" not in str(info.value)
    assert lines[0] == "[1/4] lint" and not any("build" in line for line in lines)
    assert not (broken_project / "dist").exists()


def test_the_release_command_ends_a_failure_with_one_line_and_exit_2(broken_project) -> None:
    done = subprocess.run([sys.executable, "-m", "level2_devops.release", "--root",
                           str(broken_project), "--skip-tests"],
                          capture_output=True, text=True, cwd=broken_project)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: release step 'lint' failed")
    assert "Traceback" not in done.stderr
    assert "[1/4] lint" in done.stdout


def test_failing_tests_stop_the_release(broken_project) -> None:
    (broken_project / "pkg" / "__init__.py").write_text("")
    (broken_project / "test_fails.py").write_text("def test_fails():\n    assert 1 == 2\n")
    options = ReleaseOptions(root=broken_project, pytest_args=("-p", "no:cacheprovider"))
    with pytest.raises(ReleaseError, match="release step 'tests' failed.*--skip-tests"):
        run_release(options, echo=lambda _line: None)
    assert not (broken_project / "dist").exists()


def test_the_bundle_step_without_a_model_names_the_fix(tmp_path) -> None:
    options = ReleaseOptions(dist_dir=tmp_path / "dist", model=tmp_path / "nope.pkl")
    with pytest.raises(ReleaseError, match="release step 'bundle' failed.*level2 train"):
        bundle(options, echo=lambda _line: None)


# --- the bundle -----------------------------------------------------------------------------------

def test_the_bundle_holds_the_model_its_metadata_and_their_sha256(model_file, tmp_path) -> None:
    path = write_bundle(model_file, tmp_path / "dist", "0.1.0")
    assert path.name == "taxi-duration-v1.tar.gz"
    manifest = verify_bundle(path)
    assert manifest["version"] == "v1" and manifest["package_version"] == "0.1.0"
    with tarfile.open(path) as archive:
        assert sorted(archive.getnames()) == sorted(
            [MANIFEST_NAME, "taxi-duration-v1.pkl", "taxi-duration-v1.json"])
        for name, entry in manifest["files"].items():
            data = archive.extractfile(name).read()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert data == (model_file.parent / name).read_bytes()
            assert entry["bytes"] == len(data)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_verify_bundle_detects_a_tampered_member(model_file, tmp_path) -> None:
    good = write_bundle(model_file, tmp_path / "dist", "0.1.0")
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(good) as src, tarfile.open(tampered, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith(".json") and member.name != MANIFEST_NAME:
                data = data.replace(b'"v1"', b'"v9"')
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    with pytest.raises(ReleaseError, match="taxi-duration-v1.json does not match its sha256"):
        verify_bundle(tampered)


def test_verify_bundle_refuses_a_file_that_is_no_bundle(tmp_path) -> None:
    path = tmp_path / "x.tar.gz"
    path.write_bytes(b"not a tarball")
    with pytest.raises(ReleaseError, match="cannot be read"):
        verify_bundle(path)


@pytest.mark.parametrize("manifest", [b"{not json", b'{"model": "taxi-duration"}', b"[1, 2]"])
def test_verify_bundle_refuses_a_bad_manifest_in_one_line(tmp_path, manifest) -> None:
    path = tmp_path / "bad.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(MANIFEST_NAME)
        info.size = len(manifest)
        archive.addfile(info, io.BytesIO(manifest))
    with pytest.raises(ReleaseError, match=f"{MANIFEST_NAME} is not a manifest.*rebuild") as info:
        verify_bundle(path)
    assert "\n" not in str(info.value)


def test_the_release_help_names_each_flag_once() -> None:
    from typer.testing import CliRunner

    from level2_devops.release import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for flag in ("--skip-lint", "--skip-tests", "--no-bundle", "--pytest-args", "--model"):
        assert flag in result.output
    assert "--no-no-bundle" not in result.output and "--no-skip-tests" not in result.output


# --- the wheel ------------------------------------------------------------------------------------

def test_the_expected_wheel_files_come_from_pyproject() -> None:
    expected = expected_wheel_files(PROJECT_ROOT)
    assert "taxi_common/__init__.py" in expected and "workbook/__init__.py" in expected
    assert any(name.startswith("taxi_common/profile/") and name.endswith(".json")
               for name in expected)
    assert any(name.startswith("level1_notebooks/") and name.endswith(".ipynb")
               for name in expected)
    assert not any(name.startswith("tests/") for name in expected)


def test_check_wheel_reports_missing_and_forbidden_files(tmp_path) -> None:
    wheel = tmp_path / "bad-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("taxi_common/__init__.py", "")
        archive.writestr("tests/test_x.py", "")
    problems = check_wheel(wheel, PROJECT_ROOT)
    assert "missing workbook/__init__.py" in problems
    assert "must not contain tests/test_x.py" in problems
    assert "no console script mlops-levels = workbook.cli:main" in problems


def _fresh_env(venv: Path, home: Path) -> dict[str, str]:
    """The environment for commands of the fresh venv: its own interpreter, the main venv's
    site-packages on PYTHONPATH for the dependencies, no trace of the source checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHONPATH=sysconfig.get_paths()["purelib"], WORKBOOK_HOME=str(home),
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return env


@pytest.mark.slow
def test_release_builds_a_wheel_that_installs_and_runs_on_its_own(model_file, tmp_path) -> None:
    """Build, check and bundle for real, then install the wheel into a fresh virtual environment.

    A truly fresh venv cannot install the dependencies offline in reasonable time, so the wheel
    is installed with ``pip install --no-deps --no-index`` and the dependencies come from the
    main venv's site-packages through ``PYTHONPATH``. The main venv holds the project only as an
    editable install (a ``.pth`` finder, which Python ignores on ``PYTHONPATH``), and the commands
    run outside the checkout, so every project module must come from the fresh venv: the test
    checks that too.
    """
    dist = tmp_path / "dist"
    lines: list[str] = []
    built = run_release(ReleaseOptions(dist_dir=dist, skip_lint=True, skip_tests=True,
                                       model=model_file), echo=lines.append)
    assert [line for line in lines if line.startswith("[")] == [
        "[1/3] build", "[2/3] check", "[3/3] bundle"]
    wheel = next(p for p in built if p.suffix == ".whl")
    assert {p.name for p in built} == {wheel.name, "mlops_levels-0.1.0.tar.gz",
                                       "taxi-duration-v1.tar.gz"}
    verify_bundle(dist / "taxi-duration-v1.tar.gz")

    names = zipfile.ZipFile(wheel).namelist()
    for package in ("taxi_common", "level1_notebooks", "level2_devops", "level3_training",
                    "workbook"):
        assert f"{package}/__init__.py" in names
    assert "level2_devops/training.py" in names and "level2_devops/release.py" in names
    assert any(n.startswith("taxi_common/profile/") and n.endswith(".json") for n in names)
    assert any(n.startswith("level1_notebooks/") and n.endswith(".ipynb") for n in names)
    assert not [n for n in names if n.startswith("tests/") or ".workbook" in n]

    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    env = _fresh_env(venv, tmp_path / "home")
    subprocess.run([venv / "bin" / "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True, env=env, cwd=tmp_path)
    probe = ("import importlib.resources as r, json, taxi_common, level2_devops.training, "
             "level1_notebooks; "
             "print(json.dumps({'taxi_common': taxi_common.__file__, "
             "'level2': level2_devops.training.__file__, "
             "'notebooks': sorted(p.name for p in r.files('level1_notebooks').iterdir() "
             "if p.name.endswith('.ipynb')), "
             "'profile': sorted(p.name for p in r.files('taxi_common').joinpath('profile')"
             ".iterdir() if p.name.endswith('.json'))}))")
    done = subprocess.run([venv / "bin" / "python", "-c", probe], capture_output=True, text=True,
                          env=env, cwd=tmp_path, check=True)
    found = json.loads(done.stdout)
    assert found["taxi_common"].startswith(str(venv)) and found["level2"].startswith(str(venv))
    assert found["notebooks"] and found["profile"]

    helped = subprocess.run([venv / "bin" / "mlops-levels", "--help"], capture_output=True,
                            text=True, env=env, cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "level2" in helped.stdout

    trained = subprocess.run([venv / "bin" / "mlops-levels", "level2", "train", "--rows", "1500"],
                             capture_output=True, text=True, env=env, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert f"model: {tmp_path / 'home' / 'models' / 'taxi-duration-v1.pkl'}" in trained.stdout
