"""Versioned model files: ``<dir>/taxi-duration-v<N>.pkl`` and its ``.json`` metadata beside it.

The JSON is this level's home-grown tracking (version, data, parameters, scores, library versions).
Writes are atomic and two trainings saving at once get two different versions: the metadata file
claims the version (a hard link that fails if the name is taken), then the model file appears by
an atomic rename, so a reader that sees a model file always finds its metadata. A model write
that fails after the claim (a full disk) removes the claim again: no orphan metadata remains.
Pickle files run code when loaded: load only model files you made yourself.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

from sklearn.pipeline import Pipeline

from taxi_common.errors import BadInputError, WorkbookError
from taxi_common.files import atomic_write

MODEL_NAME = "taxi-duration"
_VERSIONED = re.compile(rf"^{MODEL_NAME}-v(\d+)\.(pkl|json)$")
_MAX_CLAIM_ATTEMPTS = 1000


def metadata_path(model_path: Path) -> Path:
    """The metadata JSON that belongs to ``model_path``."""
    return Path(model_path).with_suffix(".json")


def model_path(models_dir: Path, version: int) -> Path:
    """Where version ``version`` of the model lives in ``models_dir``."""
    return Path(models_dir) / f"{MODEL_NAME}-v{version}.pkl"


def _versions(models_dir: Path, suffixes: tuple[str, ...] = ("pkl", "json")) -> list[int]:
    """Version numbers present in ``models_dir`` as files with one of ``suffixes``."""
    folder = Path(models_dir)
    if not folder.is_dir():
        return []
    return sorted({int(m.group(1)) for p in folder.iterdir()
                   if (m := _VERSIONED.match(p.name)) and m.group(2) in suffixes})


def next_version(models_dir: Path) -> int:
    """One more than the highest version in ``models_dir`` (1 for an empty or missing folder)."""
    return max(_versions(models_dir), default=0) + 1


def list_models(models_dir: Path) -> list[Path]:
    """The model files in ``models_dir``, oldest version first."""
    return [model_path(models_dir, v) for v in _versions(models_dir, ("pkl",))]


def latest_model(models_dir: Path) -> Path:
    """The model file with the highest version; a clear error when there is none."""
    models = list_models(models_dir)
    if not models:
        raise BadInputError(f"no model file {MODEL_NAME}-v*.pkl in {models_dir}: train one with "
                            "`mlops-levels level2 train` or pass --model PATH")
    return models[-1]


def _temp_file(folder: Path, name: str, data: bytes) -> Path:
    """A hidden temporary file in ``folder`` holding ``data`` (same filesystem as the target)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    Path(tmp).chmod(0o644)  # mkstemp makes it private; model files are ordinary files
    return Path(tmp)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    with atomic_write(path) as (out, _):
        out.write(data)


def _claim(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` only if no file has that name; True when it was created."""
    tmp = _temp_file(path.parent, path.name, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _write_claimed_model(path: Path, model_bytes: bytes) -> None:
    """Write the model file of a claimed version; on failure, release the claim and say so."""
    try:
        _atomic_write(path, model_bytes)
    except BaseException as exc:
        metadata_path(path).unlink(missing_ok=True)  # the version is free again
        if isinstance(exc, OSError):
            raise WorkbookError(f"could not write model file {path} "
                                f"({exc.strerror or exc}); nothing was saved") from exc
        raise


def save_model(pipeline: Pipeline, metadata: dict[str, Any], models_dir: Path) -> Path:
    """Write the next version of the model and its metadata; return the model file's path.

    ``metadata["version"]`` and ``metadata["model_file"]`` are filled in here.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    model_bytes = pickle.dumps(pipeline, protocol=5)
    for _ in range(_MAX_CLAIM_ATTEMPTS):
        version = next_version(models_dir)
        path = model_path(models_dir, version)
        meta = {**metadata, "version": f"v{version}", "model_file": path.name}
        if _claim(metadata_path(path), json.dumps(meta, indent=2, sort_keys=True).encode()):
            _write_claimed_model(path, model_bytes)
            return path
    raise BadInputError(f"could not claim a free model version in {models_dir}: "
                        "too many trainings saving at once; retry")


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata saved beside model file ``path`` (``{}`` when there is none)."""
    meta_file = metadata_path(path)
    if not meta_file.is_file():
        return {}
    try:
        metadata = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"metadata file {meta_file} is not valid JSON ({exc}); "
                            "retrain the model") from exc
    if not isinstance(metadata, dict):
        raise BadInputError(f"metadata file {meta_file} does not hold a JSON object; "
                            "retrain the model")
    return metadata


def load_model(path: Path) -> tuple[Pipeline, dict[str, Any]]:
    """The pipeline and metadata saved at ``path``; a clear error if either is missing or bad."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"model file {path} does not exist: train one with "
                            "`mlops-levels level2 train` or pass --model PATH")
    metadata = read_metadata(path)
    try:
        pipeline = pickle.loads(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError,
            ImportError, IndexError, TypeError, ValueError) as exc:
        raise BadInputError(f"model file {path} cannot be read ({type(exc).__name__}: {exc}); "
                            "retrain it") from exc
    if not hasattr(pipeline, "predict"):
        raise BadInputError(f"{path} does not hold a model (no predict method); retrain it")
    metadata.setdefault("version", path.stem)
    return pipeline, metadata
