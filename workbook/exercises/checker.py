"""Check a student's answer file against a level's key.

The answer file is YAML, one ``id: answer`` per line (``1a: 8.27``); a build task is checked when
its id is listed (``4a: done``). Numbers are compared with the key's tolerance; choices by name,
ignoring case and spaces; build tasks run their check against the working copy. Anything that
cannot be read — bad YAML, not a mapping, an unknown id, a non-number where a number is asked,
a name that is not one of the choices — is a :class:`~taxi_common.errors.BadInputError` naming it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taxi_common.errors import BadInputError
from workbook.exercises.build import run_check
from workbook.exercises.keys import Answer, Key


@dataclass(frozen=True)
class Verdict:
    """The outcome of one answer."""

    id: str
    passed: bool | None  # None: not graded (a discussion question)
    message: str


def read_answers(path: Path) -> dict[str, Any]:
    """The ``id -> answer`` mapping of an answer file; a one-line error when it is not one."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInputError(f"cannot read answer file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BadInputError(f"{path}: not valid YAML{where}: write one `id: answer` per line, "
                            "e.g. `1a: 8.27`") from exc
    if data is None:
        raise BadInputError(f"{path}: no answers: write one `id: answer` per line, e.g. `1a: 8.27`")
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected `id: answer` lines, got a YAML "
                            f"{type(data).__name__}: write one `id: answer` per line")
    return {str(k): v for k, v in data.items()}


def as_number(value: Any) -> float | None:
    """A YAML value as a float (``74,475`` and ``74_475`` too); None when it is no number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and re.fullmatch(r"[+-]?[\d,_]*\.?\d+(e[+-]?\d+)?", value.strip(),
                                               re.I):
        return float(value.strip().replace(",", "").replace("_", ""))
    return None


def _normal(name: str) -> str:
    return " ".join(str(name).split()).lower()


def parse_answers(key: Key, given: dict[str, Any], path: Path) -> dict[str, Any]:
    """The answers in their checked form; a one-line error naming the first unusable one."""
    parsed: dict[str, Any] = {}
    for answer_id, value in given.items():
        if answer_id not in key.answers:
            raise BadInputError(f"{path}: unknown exercise id {answer_id!r} for level "
                                f"{key.level}: use one of {', '.join(key.answers)}")
        answer = key.answers[answer_id]
        if answer.kind == "number":
            number = as_number(value)
            if number is None:
                raise BadInputError(f"{path}: answer {answer_id} must be a number, got "
                                    f"{value!r}")
            parsed[answer_id] = number
        elif answer.kind == "choice":
            names = {_normal(c): c for c in answer.choices}
            number = as_number(value)
            names.update({f"{as_number(c):g}": c for c in answer.choices
                          if as_number(c) is not None})
            if number is not None:
                value = f"{number:g}"  # 1, 1.0 and "1" are the same choice
            if _normal(value) not in names:
                raise BadInputError(f"{path}: answer {answer_id} must be one of "
                                    f"{', '.join(answer.choices)}, got {value!r}")
            parsed[answer_id] = names[_normal(value)]
        else:
            parsed[answer_id] = value
    return parsed


def _number_verdict(answer: Answer, value: float, source: str) -> Verdict:
    expected, tolerance = answer.expected(source)
    unit = f" {answer.unit}" if answer.unit else ""
    if abs(value - float(expected)) <= tolerance + 1e-12:
        return Verdict(answer.id, True, f"{value:g}{unit} (within ±{tolerance:g})")
    return Verdict(answer.id, False, f"{value:g}{unit} is not it: look again at "
                                     f"{answer.look_again}")


def judge(answer: Answer, value: Any, source: str, root: Path,
          run: Callable[[str, Path], Any] = run_check) -> Verdict:
    """The verdict on one parsed answer."""
    if answer.kind == "number":
        return _number_verdict(answer, value, source)
    if answer.kind == "choice":
        expected, _ = answer.expected(source)
        if _normal(value) == _normal(expected):
            return Verdict(answer.id, True, str(value))
        return Verdict(answer.id, False, f"{value} is not it: look again at {answer.look_again}")
    if answer.kind == "build":
        assert answer.check is not None, answer.id
        result = run(answer.check, root)
        if result.passed:
            return Verdict(answer.id, True, f"check passed: {result.message}")
        return Verdict(answer.id, False, f"check failed: {result.message}; look again at "
                                         f"{answer.look_again}")
    return Verdict(answer.id, None, "not graded: compare with your instructor")


def check_answers(key: Key, path: Path, *, root: Path, source: str = "synthetic",
                  progress: Callable[[Verdict], None] = lambda _v: None) -> list[Verdict]:
    """Every verdict on the answer file ``path``, in the key's order."""
    if source not in ("synthetic", "tlc"):
        raise BadInputError(f"--source {source!r}: use synthetic or tlc")
    parsed = parse_answers(key, read_answers(path), path)
    if source == "tlc":
        for answer_id in parsed:
            if key.answers[answer_id].kind in ("number", "choice"):
                key.answers[answer_id].expected("tlc")  # a one-line error when it has none
    verdicts = []
    for answer_id in key.answers:
        if answer_id in parsed:
            verdicts.append(judge(key.answers[answer_id], parsed[answer_id], source, root))
            progress(verdicts[-1])
    return verdicts
