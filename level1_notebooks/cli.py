"""Commands of level1_notebooks, mounted as `mlops-levels level1 …`."""

from __future__ import annotations

import typer

app = typer.Typer(help="level1_notebooks: commands of this level.", no_args_is_help=True)
