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
from tests.workbook.conftest import (
    assert_build_task_fails_untouched_and_passes_with_its_solution,
    assert_checker_accepts_the_key_and_names_each_wrong_answer,
    assert_recomputed,
    numeric_answers,
    write_answers,
)
from workbook.exercises.keys import load_key

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


@pytest.mark.figures
@pytest.mark.parametrize("answer", numeric_answers(KEY), ids=lambda a: a.id)
def test_every_key_answer_is_recomputed_within_its_tolerance(answer, synthetic_context) -> None:
    assert_recomputed(answer, synthetic_context, "synthetic")


@pytest.mark.tlc
@pytest.mark.figures
@pytest.mark.parametrize("answer", numeric_answers(KEY, "tlc"), ids=lambda a: a.id)
def test_every_real_data_answer_is_recomputed_on_the_tlc_months(answer, tlc_context) -> None:
    assert_recomputed(answer, tlc_context, "tlc")


@pytest.mark.parametrize(("source", "reference"), [("synthetic", SYNTHETIC_FIGURES),
                                                   ("tlc", REAL_FIGURES)])
def test_the_key_holds_the_reference_figures_of_the_readme(source: str, reference) -> None:
    for answer_id, figure in reference.items():
        assert KEY.answers[answer_id].expected(source) == (figure.value, figure.tolerance), \
            answer_id


def test_the_checker_accepts_the_key_and_names_each_wrong_answer(tmp_path: Path,
                                                                 exercises_cli) -> None:
    assert_checker_accepts_the_key_and_names_each_wrong_answer(KEY, tmp_path, exercises_cli)
    proc = exercises_cli("check", "1", str(write_answers(tmp_path / "2d.yaml", {"2d": 7.9})))
    assert proc.returncode == 1
    assert "AGAIN  2d   7.9 minutes is not it: look again at the median_minutes column" \
        in proc.stdout


def test_the_build_task_fails_on_the_untouched_workbook_and_passes_with_the_solution(
        working_copy: Path, tmp_path: Path, exercises_cli) -> None:
    message = assert_build_task_fails_untouched_and_passes_with_its_solution(KEY, "4a",
                                                                             working_copy)
    assert "clip trip_distance at 100" in message
    answers = write_answers(tmp_path / "a.yaml", {"4a": "done", "4b": 7.689})
    proc = exercises_cli("check", "1", str(answers), "--repo", str(working_copy))
    assert proc.returncode == 0 and "ok     4a   check passed" in proc.stdout, proc.stdout
