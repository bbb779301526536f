"""Level 3's exercises: every key answer recomputed (with level 3's data, search and registry
functions), the checker on the key, and the build task (``registry.champion_history``).

Marked ``figures`` where the recomputed figures move with the BLAS: ``make test`` runs those with
two and again with one OpenBLAS thread, so each tolerance is checked against both.
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

KEY = load_key("3")


#: Answers that no BLAS moves: a count of cache hits, a row count, registry aliases.
BLAS_FREE = ("1a", "3a", "4a", "4b")


@pytest.mark.parametrize("answer", recompute_params(KEY, blas_free=BLAS_FREE))
def test_every_key_answer_is_recomputed_within_its_tolerance(answer, synthetic_context) -> None:
    assert_recomputed(answer, synthetic_context, "synthetic")


@pytest.mark.tlc
@pytest.mark.parametrize("answer", recompute_params(KEY, "tlc", blas_free=BLAS_FREE))
def test_every_real_data_answer_is_recomputed_on_the_tlc_months(answer, tlc_context) -> None:
    assert_recomputed(answer, tlc_context, "tlc")


def test_the_checker_accepts_the_key_and_names_each_wrong_answer(tmp_path: Path,
                                                                 exercises_cli) -> None:
    assert_checker_accepts_the_key_and_names_each_wrong_answer(KEY, tmp_path, exercises_cli)


def test_the_history_task_fails_untouched_and_passes_with_the_solution(working_copy) -> None:
    message = assert_build_task_fails_untouched_and_passes_with_its_solution(KEY, "7a",
                                                                             working_copy)
    assert "has no function champion_history(client)" in message
