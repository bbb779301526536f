"""The answer keys: one YAML file per level under ``solutions/``, read into small dataclasses.

A key lists every checkable answer of a level's ``EXERCISES.md``, by id (``1a``, ``4b``, …):

* ``number``: a numeric answer on the default synthetic data, with its ``tolerance`` and the
  function (``compute: module:function``) that recomputes it from the code; optionally a ``tlc``
  answer on the real TLC months (``{answer, tolerance}``), marked as such;
* ``choice``: one of a few names (``choices``), computed the same way;
* ``build``: a task whose ``check: module:function`` runs against the student's working copy,
  with its reference solution (``solution``: a patch under ``solutions/``);
* ``text``: a discussion question; the key holds a model answer, the checker does not grade it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taxi_common.errors import BadInputError

#: The level folders, by level number.
LEVELS: dict[str, str] = {"1": "level1_notebooks", "2": "level2_devops", "3": "level3_training",
                          "4": "level4_deployment", "5": "level5_automation"}
KINDS = ("number", "choice", "build", "text")
#: The checkout the workbook package was installed from (editable install): the default working
#: copy whose build tasks are checked, and the home of ``solutions/``.
REPO_ROOT = Path(__file__).resolve().parents[2]


def solutions_dir(root: Path = REPO_ROOT) -> Path:
    """The folder of the answer keys and reference solutions."""
    return root / "solutions"


@dataclass(frozen=True)
class RealAnswer:
    """The answer of the same question on the real TLC months."""

    answer: float | str
    tolerance: float = 0.0


@dataclass(frozen=True)
class Answer:
    """One checkable answer of a level's exercises."""

    id: str
    exercise: int
    kind: str
    question: str
    look_again: str
    answer: float | str | None = None
    tolerance: float = 0.0
    unit: str = ""
    compute: str | None = None
    choices: tuple[str, ...] = ()
    tlc: RealAnswer | None = None
    check: str | None = None
    solution: str | None = None

    def expected(self, source: str = "synthetic") -> tuple[float | str, float]:
        """The key's answer and tolerance for ``source`` (``synthetic`` or ``tlc``)."""
        if source == "tlc":
            if self.tlc is None:
                raise BadInputError(f"answer {self.id} has no real-data (tlc) answer: check it "
                                    "with --source synthetic")
            return self.tlc.answer, self.tlc.tolerance
        assert self.answer is not None, self.id
        return self.answer, self.tolerance


@dataclass(frozen=True)
class Key:
    """A level's answer key."""

    level: str
    title: str
    answers: dict[str, Answer] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        """The level's package folder (``level1_notebooks`` …)."""
        return LEVELS[self.level]


def level_number(level: str) -> str:
    """``1``…``5`` from ``1``, ``level1`` or a level folder name; a clear error otherwise."""
    text = str(level).strip().lower()
    for number, folder in LEVELS.items():
        if text in (number, f"level{number}", folder):
            return number
    raise BadInputError(f"unknown level {level!r}: use 1-5 (or level1 ... level5)")


def resolve(reference: str) -> Callable[..., Any]:
    """The function named by ``module:function``."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def _answer(item: dict[str, Any], path: Path) -> Answer:
    item = dict(item)
    item["id"] = str(item["id"])
    if item["kind"] not in KINDS:
        raise ValueError(f"{path}: answer {item['id']}: kind must be one of {KINDS}")
    if tlc := item.get("tlc"):
        item["tlc"] = RealAnswer(**tlc)
    item["choices"] = tuple(item.get("choices", ()))
    return Answer(**item)


def load_key(level: str, root: Path = REPO_ROOT) -> Key:
    """The answer key of ``level`` (``solutions/levelN.yaml``)."""
    import yaml

    number = level_number(level)
    path = solutions_dir(root) / f"level{number}.yaml"
    if not path.exists():
        raise BadInputError(f"no answer key {path}: the exercises need the checkout "
                            "(install it with `pip install -e .` or `make setup`)")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    answers = [_answer(item, path) for item in data["answers"]]
    key = Key(number, data["title"], {a.id: a for a in answers})
    if len(key.answers) != len(answers):
        raise ValueError(f"{path}: duplicate answer ids")
    return key
