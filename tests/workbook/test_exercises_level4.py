"""Level 4's exercises: every key answer recomputed (routing, A/B design, peeking), the checker
on the key, and the build task (a bias metric in the daily monitoring).

Only the A/A simulation depends on a BLAS (its errors come from a ``LinearRegression()``): it is
marked ``figures``, so ``make test`` runs it with two and again with one OpenBLAS thread.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workbook.conftest import (
    assert_build_task_fails_untouched_and_passes_with_its_solution,
    assert_checker_accepts_the_key_and_names_each_wrong_answer,
    assert_recomputed,
    recompute_params,
)
from workbook.exercises.keys import load_key

KEY = load_key("4")
#: Answers no BLAS moves: a hash, a power calculation.
BLAS_FREE = ("2a", "2b", "2c", "3a", "3b")


@pytest.mark.parametrize("answer", recompute_params(KEY, blas_free=BLAS_FREE))
def test_every_key_answer_is_recomputed_within_its_tolerance(answer, synthetic_context) -> None:
    assert_recomputed(answer, synthetic_context, "synthetic")


@pytest.mark.tlc
@pytest.mark.parametrize("answer", recompute_params(KEY, "tlc", blas_free=BLAS_FREE))
def test_every_real_data_answer_is_recomputed_on_the_tlc_months(answer, tlc_context) -> None:
    assert_recomputed(answer, tlc_context, "tlc")


def test_the_design_answer_is_the_services_default() -> None:
    from level4_deployment.ab import DEFAULT_MIN_SAMPLES

    assert KEY.answers["3a"].answer == DEFAULT_MIN_SAMPLES


def test_the_checker_accepts_the_key_and_names_each_wrong_answer(tmp_path: Path,
                                                                 exercises_cli) -> None:
    assert_checker_accepts_the_key_and_names_each_wrong_answer(KEY, tmp_path, exercises_cli)


def test_the_metric_task_fails_untouched_and_passes_with_the_solution(working_copy) -> None:
    message = assert_build_task_fails_untouched_and_passes_with_its_solution(KEY, "4a",
                                                                             working_copy)
    assert "has no [thresholds] bias" in message
