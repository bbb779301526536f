"""Build tasks: run a task's check against a working copy, in a fresh Python process.

A check is a function ``check(root: Path) -> str`` that imports the student's code from the
working copy ``root`` and returns one line saying what it verified, or raises
:class:`CheckFailed` with what to look at again. It runs in a subprocess whose ``PYTHONPATH``
starts with ``root`` (so ``root``'s packages are imported, not the installed ones) and whose
``WORKBOOK_HOME`` is a temporary folder (a check leaves nothing behind).

``python -m workbook.exercises.build module:function ROOT`` is that subprocess: exit code 0 and
the check's line when it passes, 10 and the reason when it fails, 11 and the exception's line when
the student's code raises.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: A check that takes longer than this is reported as failed (it is hanging).
CHECK_TIMEOUT_S = 300
#: The check process's exit codes: passed, failed (CheckFailed), the student's code raised.
PASSED, FAILED, RAISED = 0, 10, 11


class CheckFailed(Exception):
    """A build task's check did not pass; the message says what to look at again."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one build task's check."""

    passed: bool
    message: str


def run_check(reference: str, root: Path, timeout: float = CHECK_TIMEOUT_S) -> CheckResult:
    """Run the check ``module:function`` against the working copy ``root``, in a subprocess."""
    root = Path(root).resolve()
    with tempfile.TemporaryDirectory(prefix="exercise-check-") as home:
        env = {**os.environ, "WORKBOOK_HOME": home,
               "PYTHONPATH": os.pathsep.join(p for p in (str(root),
                                                         os.environ.get("PYTHONPATH")) if p)}
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "workbook.exercises.build", reference, str(root)],
                cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return CheckResult(False, f"the check did not finish in {timeout:.0f} s")
    lines = (proc.stdout.strip() or proc.stderr.strip() or "no output").splitlines()
    if proc.returncode in (PASSED, FAILED, RAISED):
        return CheckResult(proc.returncode == PASSED, lines[-1])
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output"
    return CheckResult(False, f"the check's process failed (exit code {proc.returncode}): {last}")


def _main(reference: str, root: str) -> int:
    # run as __main__, this module's CheckFailed is another class than the checks raise
    from workbook.exercises.build import CheckFailed as Failed
    from workbook.exercises.keys import resolve

    try:
        message = resolve(reference)(Path(root))
    except Failed as exc:
        print(exc)
        return FAILED
    except Exception as exc:  # noqa: BLE001 - the student's code may raise anything
        print(f"your code raised {type(exc).__name__}: {exc}")
        return RAISED
    print(message)
    return PASSED


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:3]))


def apply_solution(solution: str, root: Path, solutions: Path | None = None) -> None:
    """Apply the reference solution ``solution`` (a patch under ``solutions/``) to the working
    copy ``root`` with ``git apply`` (which needs no repository there)."""
    from workbook.exercises.keys import solutions_dir

    patch = (solutions or solutions_dir()) / solution
    proc = subprocess.run(["git", "apply", "--whitespace=nowarn", str(patch)], cwd=root,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{patch} does not apply to {root}: {proc.stderr.strip()}")
