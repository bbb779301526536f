"""Fixtures of the exercise tests: recompute contexts cached per session, a copy of the working
tree to apply reference solutions to, and the ``mlops-levels exercises`` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from taxi_common.settings import Settings
from workbook.exercises.context import Context
from workbook.exercises.keys import REPO_ROOT, Answer, Key

#: What a build task's check may import from a working copy.
COPIED = ("taxi_common", "level1_notebooks", "level2_devops", "level3_training",
          "level4_deployment", "level5_automation", "workbook", "solutions")


@pytest.fixture(scope="session")
def synthetic_context(tmp_path_factory: pytest.TempPathFactory) -> Context:
    """One recompute context on the default synthetic data for the whole session (its cache
    holds the fitted models several answers share)."""
    return Context(Settings(workbook_home=tmp_path_factory.mktemp("exercise-keys")))


@pytest.fixture(scope="session")
def tlc_context(tmp_path_factory: pytest.TempPathFactory, tlc_mirror: str) -> Context:
    """The same on the real TLC months, read through the local mirror (skipped without them)."""
    home = tmp_path_factory.mktemp("exercise-keys-tlc")
    return Context(Settings(workbook_home=home, tlc_base_url=tlc_mirror), source="tlc")


@pytest.fixture
def working_copy(tmp_path: Path) -> Path:
    """A copy of the workbook's packages (and solutions/) in a temporary folder: the untouched
    working copy a student starts from, to apply reference solutions to."""
    root = tmp_path / "copy"
    ignore = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", "*.pyc")
    for name in COPIED:
        shutil.copytree(REPO_ROOT / name, root / name, ignore=ignore)
    return root


def numeric_answers(key: Key, source: str = "synthetic") -> list[Answer]:
    """The answers of ``key`` that the tests recompute (numbers and choices)."""
    return [a for a in key.answers.values() if a.kind in ("number", "choice")
            and (source == "synthetic" or a.tlc is not None)]


def key_as_answers(key: Key, source: str = "synthetic") -> dict[str, object]:
    """The key itself as a student's answer file (numbers and choices)."""
    return {a.id: a.expected(source)[0] for a in numeric_answers(key, source)}


def write_answers(path: Path, answers: dict[str, object]) -> Path:
    """An answer file with ``answers``, one ``id: value`` per line."""
    import yaml

    path.write_text(yaml.safe_dump({str(k): v for k, v in answers.items()}, sort_keys=False))
    return path


@pytest.fixture
def exercises_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``exercises_cli(*args)``: ``mlops-levels exercises ARGS`` in a subprocess (its real exit
    code and one-line errors), with a private WORKBOOK_HOME."""
    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "WORKBOOK_HOME": str(tmp_path / "cli-home")}
        return subprocess.run([sys.executable, "-m", "workbook.cli", "exercises", *args],
                              env=env, capture_output=True, text=True, timeout=timeout)
    return run


# --- the checks every level's key gets -----------------------------------------------------------

def assert_recomputed(answer: Answer, ctx: Context, source: str) -> None:
    """The key's answer for ``source`` is what its ``compute`` function gives, within tolerance."""
    from workbook.exercises.context import compute_answer

    expected, tolerance = answer.expected(source)
    got = compute_answer(answer.compute, ctx)
    if answer.kind == "choice":
        assert got == expected, f"{answer.id}: {got!r} vs key {expected!r}"
    else:
        assert abs(got - expected) <= tolerance + 1e-12, f"{answer.id}: {got} vs key {expected}"


def assert_checker_accepts_the_key_and_names_each_wrong_answer(
        key: Key, tmp_path: Path, exercises_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """``exercises check`` passes the key itself (exit 0, synthetic and tlc), and fails every
    answer moved past its tolerance (or another choice), naming each (exit 1)."""
    from workbook.exercises.checker import check_answers

    right = key_as_answers(key)
    proc = exercises_cli("check", key.level, str(write_answers(tmp_path / "key.yaml", right)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(right)} passed, 0 to look at again" in proc.stdout
    wrong = {}
    for answer in numeric_answers(key):
        if answer.kind == "number":
            wrong[answer.id] = answer.answer + 2 * answer.tolerance + 0.01
        else:
            wrong[answer.id] = next(c for c in answer.choices if c != answer.answer)
    verdicts = check_answers(key, write_answers(tmp_path / "wrong.yaml", wrong), root=REPO_ROOT)
    assert [v.id for v in verdicts if v.passed is False] == list(right)
    assert all("is not it: look again at" in v.message for v in verdicts)
    first = next(iter(wrong))
    proc = exercises_cli("check", key.level, str(write_answers(
        tmp_path / "one.yaml", {**right, first: wrong[first]})))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"1 to look at again ({first})" in proc.stdout
    real = {a.id: a.expected("tlc")[0] for a in numeric_answers(key, "tlc")}
    if real:
        proc = exercises_cli("check", key.level, str(write_answers(tmp_path / "real.yaml", real)),
                             "--source", "tlc")
        assert proc.returncode == 0, proc.stdout + proc.stderr


def assert_build_task_fails_untouched_and_passes_with_its_solution(
        key: Key, answer_id: str, working_copy: Path) -> str:
    """The check of build task ``answer_id`` fails on the untouched copy and passes once the
    reference solution is applied to it; the failure's message."""
    from workbook.exercises.build import apply_solution, run_check

    task = key.answers[answer_id]
    before = run_check(task.check, working_copy)
    assert not before.passed, before.message
    assert "raised" not in before.message, before.message  # a CheckFailed, not a crash
    apply_solution(task.solution, working_copy)
    after = run_check(task.check, working_copy)
    assert after.passed, after.message
    return before.message


def recompute_params(key: Key, source: str = "synthetic",
                     blas_free: tuple[str, ...] = ()) -> list[object]:
    """The answers to recompute as pytest params, each marked ``figures`` (run again with one
    BLAS thread) unless its id is in ``blas_free`` (counts, registry state: the same on every
    BLAS, and not worth a second pass)."""
    return [pytest.param(a, id=a.id, marks=() if a.id in blas_free else pytest.mark.figures)
            for a in numeric_answers(key, source)]


@pytest.fixture
def compare_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private WORKBOOK_HOME for ``mlops-levels compare``, with no Prefect API (the
    comparison emits no events)."""
    monkeypatch.setenv("WORKBOOK_HOME", str(tmp_path / "workbook"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return tmp_path / "workbook"
