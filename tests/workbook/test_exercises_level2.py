"""Level 2's exercises: every key answer recomputed (with level 2's training functions), the
checker on the key, and both build tasks (the ``/model`` endpoint, the ``linear_clipped`` model).

Marked ``figures`` where the recomputed figures move with the BLAS: ``make test`` runs those with
two and again with one OpenBLAS thread, so each tolerance is checked against both.
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
)
from workbook.exercises.keys import load_key

KEY = load_key("2")


@pytest.mark.figures
@pytest.mark.parametrize("answer", numeric_answers(KEY), ids=lambda a: a.id)
def test_every_key_answer_is_recomputed_within_its_tolerance(answer, synthetic_context) -> None:
    assert_recomputed(answer, synthetic_context, "synthetic")


@pytest.mark.tlc
@pytest.mark.figures
@pytest.mark.parametrize("answer", numeric_answers(KEY, "tlc"), ids=lambda a: a.id)
def test_every_real_data_answer_is_recomputed_on_the_tlc_months(answer, tlc_context) -> None:
    assert_recomputed(answer, tlc_context, "tlc")


def test_the_key_holds_level_1s_figures_where_the_recipe_is_the_same() -> None:
    for answer_id, source, figure in (
            ("2a", "synthetic", F.SYNTHETIC_LINEAR_VAL_RMSE), ("2a", "tlc", F.REAL_LINEAR_VAL_RMSE),
            ("2b", "synthetic", F.SYNTHETIC_TIGHT_LINEAR_VAL_RMSE),
            ("2b", "tlc", F.REAL_TIGHT_LINEAR_VAL_RMSE),
            ("4b", "synthetic", F.SYNTHETIC_BEST_VAL_RMSE)):
        assert KEY.answers[answer_id].expected(source) == (figure.value, figure.tolerance)


def test_the_checker_accepts_the_key_and_names_each_wrong_answer(tmp_path: Path,
                                                                 exercises_cli) -> None:
    assert_checker_accepts_the_key_and_names_each_wrong_answer(KEY, tmp_path, exercises_cli)


def test_the_endpoint_task_fails_untouched_and_passes_with_the_solution(working_copy) -> None:
    message = assert_build_task_fails_untouched_and_passes_with_its_solution(KEY, "7a",
                                                                             working_copy)
    assert message.startswith("GET /model answers 404, not 200")


def test_the_model_task_fails_untouched_and_passes_with_the_solution(working_copy) -> None:
    message = assert_build_task_fails_untouched_and_passes_with_its_solution(KEY, "8a",
                                                                             working_copy)
    assert "has no 'linear_clipped' model" in message
