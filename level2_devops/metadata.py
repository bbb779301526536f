"""The metadata JSON written beside every level-2 model file: this level's home-grown tracking.

One flat, readable record per model: what data it saw (source, months, row counts, a fingerprint),
how it was made (model, parameters, library versions, git commit) and how good it is (RMSE, MAE).
Level 3 replaces this file with MLflow runs; the keys here are the ones level 3 logs too.
"""

from __future__ import annotations

import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from taxi_common.errors import BadInputError

#: Distributions whose versions decide what a pickled model is and how it predicts.
TRACKED_LIBRARIES: tuple[str, ...] = ("mlops-levels", "scikit-learn", "numpy", "pandas", "scipy")

#: Keys every metadata record has (``version`` and ``model_file`` are added by the model store).
REQUIRED_KEYS: tuple[str, ...] = (
    "model", "params", "created", "data", "metrics", "libraries", "git_commit",
)


def utc_now() -> str:
    """The current time in UTC, ISO 8601 to the second (``2021-03-01T12:00:00+00:00``)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def library_versions(names: tuple[str, ...] = TRACKED_LIBRARIES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (``None`` when not installed),
    plus the Python version under the key ``python``."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(path: Path | None = None) -> str | None:
    """The commit checked out where ``path`` lives (default: this package), with ``-dirty``
    appended when tracked files have changes; ``None`` outside a git checkout or without git."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=where, capture_output=True, text=True, timeout=10,
                                check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if status.strip() else head


def build_metadata(
    *,
    model: str,
    params: dict[str, Any],
    data: dict[str, Any],
    metrics: dict[str, float],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A metadata record for a freshly trained model.

    ``data`` describes the training and validation data (source, color, months, row counts,
    fingerprints); ``metrics`` holds ``train_rmse``, ``val_rmse`` and friends.
    """
    record: dict[str, Any] = {
        "model": model,
        "params": dict(params),
        "created": utc_now(),
        "data": dict(data),
        "metrics": {key: float(value) for key, value in metrics.items()},
        "libraries": library_versions(),
        "git_commit": git_commit(),
    }
    record.update(extra or {})
    return record


def check_metadata(record: dict[str, Any], source: str = "metadata") -> dict[str, Any]:
    """``record`` itself when it has every key of :data:`REQUIRED_KEYS`; a clear error otherwise."""
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise BadInputError(f"{source} lacks {', '.join(missing)}: it was not written by "
                            "`mlops-levels level2 train`; retrain the model")
    return record
