"""The monitoring reference: the champion's validation month with the champion's predictions.

Daily traffic is compared with it: drift of the inputs and of the prediction, and the day's
MAE and RMSE against the reference's. :func:`write_reference` takes any fitted pipeline;
:func:`write_registry_reference` gives it a registry version (by default the champion) and that
version's own validation month, data source, seed and scenario from its lineage tags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from taxi_common.errors import BadInputError
from taxi_common.files import atomic_write
from taxi_common.scenarios import Scenario
from taxi_common.settings import Settings

FEATURES = ("PULocationID", "DOLocationID", "trip_distance")
REFERENCE_COLUMNS = (*FEATURES, "prediction", "duration")
_METADATA_KEY = b"level4.reference"


@dataclass(frozen=True)
class Reference:
    """Reference rows and what they were made from."""

    frame: pd.DataFrame
    model_version: str | None
    month: str | None

    @property
    def mae(self) -> float:
        """The champion's MAE on its validation month (minutes)."""
        return float(np.mean(np.abs(self.frame["prediction"] - self.frame["duration"])))

    @property
    def rmse(self) -> float:
        """The champion's RMSE on its validation month (minutes)."""
        return float(np.sqrt(np.mean((self.frame["prediction"] - self.frame["duration"]) ** 2)))


def reference_frame(model: Any, traffic: pd.DataFrame) -> pd.DataFrame:
    """:data:`REFERENCE_COLUMNS` of prepared trips, with ``model``'s predictions."""
    inputs = traffic[list(FEATURES)].copy()
    frame = inputs.assign(prediction=np.asarray(model.predict(inputs), dtype=np.float64),
                          duration=traffic["duration"].to_numpy(np.float64))
    return frame.reset_index(drop=True)


def write_reference(model: Any, month: str, *, settings: Settings, path: Path,
                    model_version: str | None = None, source: str = "synthetic",
                    rows: int | None = None, seed: int = 0,
                    scenario: Scenario | str = "baseline") -> Path:
    """Predict ``month`` (the champion's validation month) with ``model`` and write the
    reference parquet file at ``path`` (atomically); return the path."""
    from level4_deployment.traffic import month_traffic

    traffic = month_traffic(month, settings=settings, source=source, rows=rows, seed=seed,
                            scenario=scenario)
    return write_reference_frame(reference_frame(model, traffic), path,
                                 model_version=model_version, month=month, source=source)


def write_reference_frame(frame: pd.DataFrame, path: Path, *, model_version: str | None,
                          month: str | None, source: str = "synthetic") -> Path:
    """Write reference rows (:data:`REFERENCE_COLUMNS`, e.g. from :func:`reference_frame`)
    and what they were made from to ``path`` (atomically), for :func:`load_reference`; level 5
    writes a retrained champion's holdout days this way (``month`` then names the days)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame[list(REFERENCE_COLUMNS)].reset_index(drop=True),
                                 preserve_index=False)
    info = {"model_version": model_version, "month": month, "source": source}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           _METADATA_KEY: json.dumps(info).encode()})
    with atomic_write(Path(path)) as (out, _tmp):
        pq.write_table(table, out)
    return Path(path)


def write_registry_reference(settings: Settings, alias_or_version: str = "champion", *,
                             path: Path, month: str | None = None, source: str | None = None,
                             rows: int | None = None, seed: int | None = None) -> Path:
    """The reference of a registry version: its validation month (``data.val_month``), with the
    data source, seed, scenario and row cap it was validated on, unless given here."""
    from level3_training.registry import client_for, get_version, load_version

    client = client_for(settings.tracking_uri)
    version, pipeline = load_version(client, alias_or_version)
    tags = dict(get_version(client, version).tags or {})
    month = month or tags.get("data.val_month")
    if not month:
        raise BadInputError(f"version {version} has no data.val_month tag: pass --month")
    cap = tags.get("data.n_rows_cap", "")
    return write_reference(
        pipeline, month, settings=settings, path=path, model_version=version,
        source=source or tags.get("data.source", "synthetic"),
        rows=rows if rows is not None else (int(cap) if cap.isdigit() else None),
        seed=seed if seed is not None else int(tags.get("data.seed", "0") or 0),
        scenario=tags.get("data.scenario", "baseline") or "baseline")


def load_reference(path: Path) -> Reference:
    """The reference written by :func:`write_reference`; a clear error for a wrong file."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"reference file {path} does not exist: write one with "
                            "`mlops-levels level4 reference`")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise BadInputError(f"reference file {path} is not a parquet file ({exc})") from None
    missing = [c for c in REFERENCE_COLUMNS if c not in table.column_names]
    if missing:
        raise BadInputError(f"reference file {path} lacks the columns {', '.join(missing)}: "
                            "write it with `mlops-levels level4 reference`")
    raw = (table.schema.metadata or {}).get(_METADATA_KEY)
    info = json.loads(raw) if raw else {}
    frame = table.select(list(REFERENCE_COLUMNS)).to_pandas()
    if frame.empty:
        raise BadInputError(f"reference file {path} has no rows")
    return Reference(frame, info.get("model_version"), info.get("month"))
