"""Versioned model files: ``<dir>/taxi-duration-v<N>.pkl`` and its ``.json`` metadata beside it.

The JSON is this level's home-grown tracking (version, data, parameters, scores, library versions).
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

from taxi_common.errors import BadInputError

MODEL_NAME = "taxi-duration"
_VERSIONED = re.compile(rf"^{MODEL_NAME}-v(\d+)\.pkl$")


def metadata_path(model_path: Path) -> Path:
    """The metadata JSON that belongs to ``model_path``."""
    return Path(model_path).with_suffix(".json")


def next_version(models_dir: Path) -> int:
    """One more than the highest version in ``models_dir`` (1 for an empty or missing folder)."""
    versions = [int(m.group(1)) for p in Path(models_dir).glob(f"{MODEL_NAME}-v*.pkl")
                if (m := _VERSIONED.match(p.name))]
    return max(versions, default=0) + 1


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(pipeline: Pipeline, metadata: dict[str, Any], models_dir: Path) -> Path:
    """Write the next version of the model and its metadata; return the model file's path.

    ``metadata["version"]`` and ``metadata["model_file"]`` are filled in here.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(models_dir)
    path = models_dir / f"{MODEL_NAME}-v{version}.pkl"
    meta = {**metadata, "version": f"v{version}", "model_file": path.name}
    _atomic_write(metadata_path(path), json.dumps(meta, indent=2, sort_keys=True).encode())
    _atomic_write(path, pickle.dumps(pipeline, protocol=5))
    return path


def load_model(path: Path) -> tuple[Pipeline, dict[str, Any]]:
    """The pipeline and metadata saved at ``path``; a clear error if either is missing or bad."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"model file {path} does not exist: train one with "
                            "`mlops-levels level2 train` or pass --model PATH")
    meta_file = metadata_path(path)
    try:
        metadata = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        pipeline = pickle.loads(path.read_bytes())
    except (pickle.UnpicklingError, json.JSONDecodeError, EOFError, AttributeError,
            ModuleNotFoundError) as exc:
        raise BadInputError(f"model file {path} cannot be read ({exc}); retrain it") from exc
    if not hasattr(pipeline, "predict"):
        raise BadInputError(f"{path} does not hold a model (no predict method)")
    metadata.setdefault("version", path.stem)
    return pipeline, metadata
