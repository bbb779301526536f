"""Commands of level2_devops, mounted as `mlops-levels level2 …`."""

from __future__ import annotations

import typer

app = typer.Typer(help="level2_devops: commands of this level.", no_args_is_help=True)
