"""Execute the level-1 notebooks with papermill and read back their RMSE table.

The notebooks are the product at level 1; this module only runs them with parameters, the way
a class (or the test suite) would, and turns a failing cell into one clear error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxi_common.data import check_source
from taxi_common.errors import BadInputError, WorkbookError
from taxi_common.months import parse_month
from taxi_common.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

NOTEBOOK_DIR = Path(__file__).resolve().parent
NOTEBOOKS: tuple[str, ...] = ("01-explore.ipynb", "02-train.ipynb")
KERNEL_NAME = "python3"
RMSE_FILE = "rmse.csv"
MODEL_FILE = "model.bin"
RMSE_COLUMNS: tuple[str, ...] = ("features", "model", "train_rmse", "val_rmse")
#: The taxi colors the notebooks read (for-hire vehicle trips report no distance).
COLORS: tuple[str, ...] = ("green", "yellow")


class NotebookError(WorkbookError):
    """A level-1 notebook stopped with an error in one of its cells."""


def default_output_dir(settings: Settings) -> Path:
    """Where ``run_level1`` writes by default: ``<reports_dir>/level1``."""
    return settings.reports_dir / "level1"


def kernel_environment(settings: Settings) -> dict[str, str]:
    """The environment variables through which the notebooks' ``Settings.from_env()`` sees
    ``settings``."""
    env = {"WORKBOOK_HOME": str(settings.workbook_home), "TLC_BASE_URL": settings.tlc_base_url}
    optional = {
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "PREFECT_API_URL": settings.prefect_api_url,
        "DATABASE_URL": settings.database_url,
    }
    env.update({name: value for name, value in optional.items() if value})
    return env


@contextmanager
def patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` (which a kernel inherits) and restore it afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _first_line(text: str, limit: int = 300) -> str:
    """The first line of ``text``, shortened to ``limit`` characters."""
    lines = (text or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def execute_notebook(
    name: str, output_dir: Path, parameters: Mapping[str, Any], *, progress: bool = True
) -> Path:
    """Run notebook ``name`` with papermill in ``output_dir``; return the executed copy's path.

    A failing cell raises :class:`NotebookError` naming the notebook, the cell and the copy.
    """
    import papermill
    from jupyter_client.kernelspec import NoSuchKernel

    executed = output_dir / name
    try:
        papermill.execute_notebook(
            str(NOTEBOOK_DIR / name),
            str(executed),
            parameters=dict(parameters),
            kernel_name=KERNEL_NAME,
            cwd=str(output_dir),
            progress_bar=progress,
            # ipykernel warns on every start that loopback TCP is unencrypted: noise here.
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    except papermill.PapermillExecutionError as exc:
        cell = f"cell {exc.cell_index + 1} (In [{exc.exec_count}])"  # counted from 1
        raise NotebookError(
            f"notebook {name} failed in {cell}: {exc.ename}: {_first_line(exc.evalue)} "
            f"- the executed copy with the full traceback is {executed}"
        ) from None
    except NoSuchKernel:
        raise NotebookError(
            f"no Jupyter kernel named {KERNEL_NAME!r} for notebook {name}: "
            "install the level1 extra (pip install -e '.[level1]')"
        ) from None
    return executed


def read_rmse_table(output_dir: Path) -> pd.DataFrame:
    """The RMSE table written by ``02-train.ipynb`` (columns features, model, train_rmse,
    val_rmse)."""
    import pandas as pd

    path = output_dir / RMSE_FILE
    if not path.exists():
        raise NotebookError(f"02-train.ipynb ran but wrote no {RMSE_FILE} in {output_dir}")
    table = pd.read_csv(path)
    missing = [c for c in RMSE_COLUMNS if c not in table.columns]
    if missing:
        raise NotebookError(f"{path} lacks the columns {missing}: re-run 02-train.ipynb")
    return table


def validate_arguments(source: str, color: str, train_month: str, val_month: str,
                       n_rows: int | None) -> None:
    """Check what can be checked before starting a kernel; raise ``BadInputError`` otherwise."""
    check_source(source)
    if color not in COLORS:
        raise BadInputError(f"the level-1 notebooks read {' or '.join(COLORS)} taxi trips, "
                            f"not {color!r}: use --color green")
    parse_month(train_month)
    parse_month(val_month)
    if n_rows is not None and n_rows <= 0:
        raise BadInputError(f"--rows must be a positive number of trips, not {n_rows}")


def run_level1(
    *,
    settings: Settings,
    source: str = "synthetic",
    color: str = "green",
    train_month: str = "2021-01",
    val_month: str = "2021-02",
    n_rows: int | None = None,
    output_dir: Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Execute ``01-explore.ipynb`` then ``02-train.ipynb`` and return the RMSE table.

    The executed copies, ``rmse.csv`` and ``model.bin`` land in ``output_dir`` (default
    ``settings.reports_dir / "level1"``), which is also the kernels' working directory.
    """
    validate_arguments(source, color, train_month, val_month, n_rows)
    out = Path(output_dir) if output_dir is not None else default_output_dir(settings)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    parameters = {
        "source": source,
        "color": color,
        "train_month": train_month,
        "val_month": val_month,
        "n_rows": n_rows,
        "output_dir": str(out),
    }
    with patched_environ(kernel_environment(settings)):
        for name in NOTEBOOKS:
            execute_notebook(name, out, parameters, progress=progress)
    return read_rmse_table(out)
