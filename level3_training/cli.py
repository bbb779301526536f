"""Commands of level3_training, mounted as `mlops-levels level3 …`."""

from __future__ import annotations

import typer

app = typer.Typer(help="level3_training: commands of this level.", no_args_is_help=True)
