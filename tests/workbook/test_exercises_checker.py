"""``mlops-levels exercises``: the checker's verdicts and its one-line refusals (level 1's key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxi_common.errors import BadInputError
from tests.workbook.conftest import write_answers
from workbook.exercises.checker import check_answers, parse_answers, read_answers
from workbook.exercises.keys import LEVELS, REPO_ROOT, load_key


@pytest.mark.parametrize(("text", "names"), [
    ("1a: [8.27\n", "not valid YAML at line"),
    ("- 1a\n- 8.27\n", "got a YAML list"),
    ("", "no answers"),
    ("9z: 1\n", "unknown exercise id '9z' for level 1"),
    ("1a: about eight\n", "answer 1a must be a number, got 'about eight'"),
    ("1a: true\n", "answer 1a must be a number"),
    ("1b: random forest\n", "answer 1b must be one of"),
])
def test_a_file_that_cannot_be_read_is_one_line_naming_the_problem(tmp_path: Path, text: str,
                                                                  names: str) -> None:
    path = tmp_path / "answers.yaml"
    path.write_text(text)
    with pytest.raises(BadInputError, match=names):
        key = load_key("1")
        parse_answers(key, read_answers(path), path)


def test_the_command_refuses_a_bad_file_with_exit_code_2_and_one_line(tmp_path: Path,
                                                                      exercises_cli) -> None:
    path = write_answers(tmp_path / "answers.yaml", {"1a": "eight", "2a": 74475})
    proc = exercises_cli("check", "1", str(path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: {path}: answer 1a must be a number, got 'eight'"
    assert proc.stdout == ""
    proc = exercises_cli("check", "level9", str(path))
    assert (proc.returncode, proc.stderr.count("\n")) == (2, 1), proc.stderr
    assert "unknown level 'level9'" in proc.stderr


def test_numbers_are_read_the_way_students_write_them(tmp_path: Path) -> None:
    key = load_key("1")
    path = write_answers(tmp_path / "a.yaml", {"2a": "74,475", "2c": "1_044", "1a": 8.27,
                                               "1b": "  pu_do   RIDGE "})
    verdicts = {v.id: v for v in check_answers(key, path, root=REPO_ROOT)}
    assert all(v.passed for v in verdicts.values()), verdicts
    assert list(verdicts) == ["1a", "1b", "2a", "2c"]  # the key's order


def test_a_text_answer_is_not_graded_and_tlc_needs_a_real_answer(tmp_path: Path) -> None:
    key = load_key("1")
    path = write_answers(tmp_path / "a.yaml", {"6": "in the metadata"})
    (verdict,) = check_answers(key, path, root=REPO_ROOT)
    assert verdict.passed is None
    with pytest.raises(BadInputError, match="answer 4a"):
        key.answers["4a"].expected("tlc")


def test_list_prints_every_level_and_its_ids(exercises_cli) -> None:
    proc = exercises_cli("list")
    assert proc.returncode == 0, proc.stderr
    for number, folder in LEVELS.items():
        if (REPO_ROOT / "solutions" / f"level{number}.yaml").exists():
            assert f"level {number} - " in proc.stdout and f"{folder}/EXERCISES.md" in proc.stdout
    one = exercises_cli("list", "1")
    assert "  1a   number  ex. 1: validation RMSE of the PU_DO LinearRegression() [+tlc]" in \
        one.stdout.splitlines()
    assert "level 2" not in one.stdout


@pytest.mark.parametrize("number", list(LEVELS))
def test_each_exercises_md_asks_exactly_the_keys_ids(number: str) -> None:
    import re

    key = load_key(number)
    text = (REPO_ROOT / key.folder / "EXERCISES.md").read_text()
    asked = re.findall(r"\*\*\[(\w+)\]\*\*", text)
    assert sorted(set(asked)) == sorted(key.answers), number
    exercises = {int(n) for n in re.findall(r"^(\d)\. \*\*", text, flags=re.M)}
    assert 4 <= len(exercises) <= 8 and {a.exercise for a in key.answers.values()} <= exercises
    for answer in key.answers.values():
        if answer.kind == "build":
            assert (REPO_ROOT / "solutions" / answer.solution).exists(), answer.id
    assert (REPO_ROOT / key.folder / "INSTRUCTOR.md").exists()
    assert "EXERCISES.md" in (REPO_ROOT / key.folder / "README.md").read_text()


def test_a_check_on_broken_student_code_fails_with_the_error_not_a_traceback(
        working_copy: Path, tmp_path: Path, exercises_cli) -> None:
    from workbook.exercises.build import run_check

    app = working_copy / "level2_devops" / "app.py"
    app.write_text(app.read_text() + "\ndef broken(:\n")
    result = run_check("workbook.exercises.level2:check_model_endpoint", working_copy)
    assert not result.passed
    assert result.message.startswith("your code raised ") and "SyntaxError" in result.message
    answers = tmp_path / "a.yaml"
    answers.write_text("7a: done\n")
    proc = exercises_cli("check", "2", str(answers), "--repo", str(working_copy))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "AGAIN  7a   check failed: your code raised" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
