"""``mlops-levels``: the workbook's one command; each level's own commands are mounted under it.

Heavy libraries (sklearn, mlflow, prefect, evidently) are imported inside the commands that use
them, so ``mlops-levels --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

from level1_notebooks.cli import app as level1_app
from level2_devops.cli import app as level2_app
from level3_training.cli import app as level3_app
from taxi_common.cli import app as data_app
from taxi_common.errors import WorkbookError

app = typer.Typer(
    name="mlops-levels",
    help="One taxi-duration model, rebuilt at each of the five MLOps maturity levels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_app, name="data")
app.add_typer(level1_app, name="level1")
app.add_typer(level2_app, name="level2")
app.add_typer(level3_app, name="level3")


def main() -> None:
    """Console entry point: user errors end in one line on stderr and exit code 2."""
    try:
        app()
    except WorkbookError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":
    main()
