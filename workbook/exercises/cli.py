"""``mlops-levels exercises``: list a level's exercises and check a student's answers."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="The classroom exercises of each level: list them, check your answers.",
                  no_args_is_help=True)

_MARK = {True: "ok     ", False: "AGAIN  ", None: "-      "}


@app.command("list")
def list_exercises(
    level: str | None = typer.Argument(None, help="A level, 1-5 (default: all)."),
) -> None:
    """Print the checkable answers of each level's EXERCISES.md, with their ids."""
    from workbook.exercises.keys import LEVELS, level_number, load_key, solutions_dir

    levels = ([level_number(level)] if level is not None else
              [n for n in LEVELS if (solutions_dir() / f"level{n}.yaml").exists()])
    for number in levels:
        key = load_key(number)
        typer.echo(f"level {number} - {key.title} ({key.folder}/EXERCISES.md)")
        for answer in key.answers.values():
            real = " [+tlc]" if answer.tlc is not None else ""
            typer.echo(f"  {answer.id:<4} {answer.kind:<7} ex. {answer.exercise}: "
                       f"{answer.question}{real}")


@app.command()
def check(
    level: str = typer.Argument(..., help="The level, 1-5."),
    answers: Path = typer.Argument(..., help="Your answers: a YAML file of `id: answer` lines."),
    source: str = typer.Option("synthetic", help="Check against the synthetic key (default) or "
                                                 "the real-data (tlc) answers."),
    repo: Path | None = typer.Option(None, help="The working copy whose build tasks are checked "
                                                "(default: the checkout mlops-levels runs from)."),
) -> None:
    """Check your answers with the key's tolerance; run the checks of the build tasks you list.

    Exit code 0 when every answer given passes, 1 when one does not, 2 when the file cannot be
    read (bad YAML, an unknown id, a non-number).
    """
    from workbook.exercises.checker import check_answers
    from workbook.exercises.keys import REPO_ROOT, load_key

    key = load_key(level)
    root = (repo or REPO_ROOT).resolve()

    shown: list[str] = []

    def show(verdict) -> None:
        if not shown:  # after the file was read: a file that cannot be read gets one line only
            typer.echo(f"level {key.level} ({source} answers), build tasks checked in {root}")
        shown.append(verdict.id)
        typer.echo(f"{_MARK[verdict.passed]}{verdict.id:<4} {verdict.message}")

    verdicts = check_answers(key, answers, root=root, source=source, progress=show)
    wrong = [v.id for v in verdicts if v.passed is False]
    passed = sum(v.passed is True for v in verdicts)
    graded = [a for a in key.answers.values() if a.kind != "text"]
    missing = [a.id for a in graded if a.id not in {v.id for v in verdicts}]
    typer.echo(f"{passed} passed, {len(wrong)} to look at again"
               + (f" ({', '.join(wrong)})" if wrong else "")
               + (f"; not answered: {', '.join(missing)}" if missing else ""))
    if wrong:
        raise typer.Exit(1)
