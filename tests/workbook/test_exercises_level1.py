"""Level 1's exercises: every key answer recomputed, the checker on the key, the build task.

The recomputed figures of ``LinearRegression()`` and ``Ridge()`` move with the BLAS: these tests
are marked ``figures``, so ``make test`` runs them with two and again with one OpenBLAS thread,
and each key's tolerance is checked against both. The key also agrees with the reference figures
of ``tests/figures.py`` (the level-1 README's and notebooks' figures).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import figures as F
from tests.workbook.conftest import key_as_answers, numeric_answers, write_answers
from workbook.exercises.build import apply_solution, run_check
from workbook.exercises.checker import check_answers
from workbook.exercises.context import compute_answer
from workbook.exercises.keys import REPO_ROOT, load_key

KEY = load_key("1")

#: The key's answers that tests/figures.py holds too: they must be the same figures.
SYNTHETIC_FIGURES = {
    "1a": F.SYNTHETIC_LINEAR_VAL_RMSE, "1c": F.SYNTHETIC_BEST_VAL_RMSE,
    "3a": F.SYNTHETIC_TIGHT_LINEAR_VAL_RMSE, "3b": F.SYNTHETIC_TIGHT_LINEAR_TRAIN_RMSE,
    "4b": F.SYNTHETIC_CLIPPED_LINEAR_VAL_RMSE, "4c": F.SYNTHETIC_CLIPPED_DISTANCE_COEF,
    "5b": F.Figure(F.SYNTHETIC_PU_DO_COLUMNS, 0),
    **{id_: F.SYNTHETIC_BASELINE_VAL_RMSE[name]
       for id_, name in (("7a", "mean"), ("7b", "median"), ("7c", "speed"))},
}
REAL_FIGURES = {
    "1a": F.REAL_LINEAR_VAL_RMSE, "3a": F.REAL_TIGHT_LINEAR_VAL_RMSE,
    "3b": F.REAL_TIGHT_LINEAR_TRAIN_RMSE, "4b": F.REAL_CLIPPED_LINEAR_VAL_RMSE,
    "2a": F.Figure(F.REAL_KEPT_ROWS["2021-01"], 0), "5b": F.Figure(F.REAL_PU_DO_COLUMNS, 0),
    **{id_: F.REAL_BASELINE_VAL_RMSE[name]
       for id_, name in (("7a", "mean"), ("7b", "median"), ("7c", "speed"))},
}


def _assert_recomputed(answer, ctx, source: str) -> None:
    expected, tolerance = answer.expected(source)
    got = compute_answer(answer.compute, ctx)
    if answer.kind == "choice":
        assert got == expected, answer.id
    else:
        assert abs(got - expected) <= tolerance + 1e-12, f"{answer.id}: {got} vs key {expected}"


@pytest.mark.figures
@pytest.mark.parametrize("answer", numeric_answers(KEY), ids=lambda a: a.id)
def test_every_key_answer_is_recomputed_within_its_tolerance(answer, synthetic_context) -> None:
    _assert_recomputed(answer, synthetic_context, "synthetic")


@pytest.mark.tlc
@pytest.mark.figures
@pytest.mark.parametrize("answer", numeric_answers(KEY, "tlc"), ids=lambda a: a.id)
def test_every_real_data_answer_is_recomputed_on_the_tlc_months(answer, tlc_context) -> None:
    _assert_recomputed(answer, tlc_context, "tlc")


@pytest.mark.parametrize(("source", "reference"), [("synthetic", SYNTHETIC_FIGURES),
                                                   ("tlc", REAL_FIGURES)])
def test_the_key_holds_the_reference_figures_of_the_readme(source: str, reference) -> None:
    for answer_id, figure in reference.items():
        assert KEY.answers[answer_id].expected(source) == (figure.value, figure.tolerance), \
            answer_id


def test_the_checker_accepts_the_key_and_refuses_each_answer_moved_past_its_tolerance(
        tmp_path: Path, exercises_cli) -> None:
    right = key_as_answers(KEY)
    proc = exercises_cli("check", "1", str(write_answers(tmp_path / "key.yaml", right)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(right)} passed, 0 to look at again; not answered: 4a" in proc.stdout
    numbers = [a for a in numeric_answers(KEY) if a.kind == "number"]
    wrong = {**right, **{a.id: a.answer + 2 * a.tolerance + 0.01 for a in numbers},
             "1b": "PU_DO lasso"}
    verdicts = check_answers(KEY, write_answers(tmp_path / "wrong.yaml", wrong), root=REPO_ROOT)
    assert [v.id for v in verdicts if not v.passed] == list(right)
    proc = exercises_cli("check", "1", str(write_answers(tmp_path / "one.yaml",
                                                         {**right, "2d": 7.9})))
    assert proc.returncode == 1
    assert "AGAIN  2d   7.9 minutes is not it: look again at the median_minutes column" \
        in proc.stdout
    assert "1 to look at again (2d)" in proc.stdout
    real = exercises_cli("check", "1", str(write_answers(tmp_path / "real.yaml",
                                                          key_as_answers(KEY, "tlc"))),
                         "--source", "tlc")
    assert real.returncode == 0, real.stdout + real.stderr


def test_the_build_task_fails_on_the_untouched_workbook_and_passes_with_the_solution(
        working_copy: Path, tmp_path: Path, exercises_cli) -> None:
    task = KEY.answers["4a"]
    before = run_check(task.check, working_copy)
    assert not before.passed and "clip trip_distance at 100" in before.message
    apply_solution(task.solution, working_copy)
    after = run_check(task.check, working_copy)
    assert after.passed, after.message
    answers = write_answers(tmp_path / "a.yaml", {"4a": "done", "4b": 7.689})
    proc = exercises_cli("check", "1", str(answers), "--repo", str(working_copy))
    assert proc.returncode == 0 and "ok     4a   check passed" in proc.stdout, proc.stdout
