"""Level 5's exercises: every key answer recomputed by running level 5's simulation (twice: the
small-city policy and the build task's policy), the checker on the key, and the build task.

The simulation limits scikit-learn and BLAS to one thread itself and is repeatable, so its
answers are exact whatever ``OPENBLAS_NUM_THREADS`` says: these tests are not marked
``figures`` (a second pass would cost two more simulations for nothing). Slow: about 40 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workbook.conftest import (
    assert_build_task_fails_untouched_and_passes_with_its_solution,
    assert_checker_accepts_the_key_and_names_each_wrong_answer,
    assert_recomputed,
    numeric_answers,
)
from workbook.exercises.keys import load_key

KEY = load_key("5")


@pytest.mark.slow
@pytest.mark.parametrize("answer", numeric_answers(KEY), ids=lambda a: a.id)
def test_every_key_answer_is_recomputed_by_the_simulation(answer, synthetic_context) -> None:
    assert_recomputed(answer, synthetic_context, "synthetic")


def test_the_checker_accepts_the_key_and_names_each_wrong_answer(tmp_path: Path,
                                                                 exercises_cli) -> None:
    assert_checker_accepts_the_key_and_names_each_wrong_answer(KEY, tmp_path, exercises_cli)


def test_the_policy_task_fails_untouched_and_passes_with_the_solution(working_copy) -> None:
    message = assert_build_task_fails_untouched_and_passes_with_its_solution(KEY, "3a",
                                                                             working_copy)
    assert "no policy file level5_automation/small_city_no_catch_up.toml" in message


def test_a_policy_that_changes_more_than_asked_is_refused(working_copy: Path) -> None:
    from workbook.exercises.build import run_check

    (working_copy / "level5_automation" / "small_city_no_catch_up.toml").write_text(
        "[triggers]\nabove = { mae_ratio = 1.12 }\nmin_labelled_rows = 300\n"
        "catch_up_every_days = 0\n[window]\nmin_rows = 500\n[promotion]\nmin_improvement = 0.2\n")
    result = run_check(KEY.answers["3a"].check, working_copy)
    assert not result.passed
    assert "changes promotion.min_improvement too" in result.message
