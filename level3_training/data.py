"""Prepared months for the pipeline: load → validate → prepare, cached by the hash of the inputs.

The cache is ``<WORKBOOK_HOME>/cache/prepared/<key>.parquet``. The key hashes everything the
prepared rows depend on: month, source, color, row cap, seed, scenario, and the source code of the
modules that produce them (schema, prepare, the synthetic generator). A re-run with other model
parameters therefore reads the parquet file instead of loading and preparing the month again;
a change to any of those inputs or modules gives a new key.

A month is a :class:`taxi_common.data.MonthRequest` (re-exported here, where it used to live).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from taxi_common.data import MonthRequest  # re-exported: level3_training.data.MonthRequest
from taxi_common.errors import SchemaError
from taxi_common.files import atomic_write
from taxi_common.prepare import FEATURE_COLUMNS, TARGET, cast_zones
from taxi_common.settings import Settings

#: Bump when the cache layout changes.
CACHE_FORMAT = 1
#: Modules whose source code is part of the cache key.
_CODE_MODULES = ("taxi_common.data", "taxi_common.schema", "taxi_common.prepare",
                 "taxi_common.synthetic", "taxi_common.sources")
#: A month with fewer usable rows than this cannot train or validate anything.
MIN_ROWS = 50


class DataValidationError(SchemaError):
    """A month whose rows load but cannot be used for training (empty, nulls in features)."""


@functools.lru_cache(maxsize=1)
def code_version_of_data() -> str:
    """A short hash of the source of the modules that load and prepare trips.

    Computed once per process: the code that runs is the code that was imported.
    """
    digest = hashlib.sha256()
    for name in _CODE_MODULES:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec else None
        digest.update(name.encode())
        if origin and os.path.exists(origin):
            digest.update(Path(origin).read_bytes())
    return digest.hexdigest()[:12]


def cache_key(request: MonthRequest) -> str:
    """The hash of every input of the prepared rows (request fields and data code version)."""
    payload = {**asdict(request), "format": CACHE_FORMAT, "code": code_version_of_data()}
    if request.source == "tlc":
        # Real months do not depend on seed or scenario.
        for name in ("seed", "scenario", "scenario_start_day", "scenario_strength"):
            payload.pop(name)
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_path(request: MonthRequest, settings: Settings) -> Path:
    """Where the prepared rows of ``request`` are cached."""
    return settings.workbook_home / "cache" / "prepared" / f"{cache_key(request)}.parquet"


def load_raw_month(request: MonthRequest, settings: Settings) -> pd.DataFrame:
    """Raw trips of the month, in the TLC schema (downloads or generates)."""
    from taxi_common.data import load_trips

    return load_trips(request, settings=settings)


def validate_raw_month(raw: pd.DataFrame, request: MonthRequest) -> pd.DataFrame:
    """The TLC schema check (columns present, of the right kind); returns ``raw``."""
    from taxi_common.schema import validate_trips

    return validate_trips(raw, request.color, request.label)


def validate_prepared(df: pd.DataFrame, label: str, min_rows: int = MIN_ROWS) -> pd.DataFrame:
    """Rows a model can learn from: enough of them, and no missing feature or target values."""
    if len(df) < min_rows:
        raise DataValidationError(
            f"{label}: only {len(df)} usable trips after the 1-60 minute filter (need {min_rows}); "
            "pick another month or raise --rows"
        )
    for name in (*FEATURE_COLUMNS, TARGET):
        missing = int(df[name].isna().sum())
        if missing:
            raise DataValidationError(
                f"{label}: {missing} of {len(df)} trips have no {name}; the month fails "
                "validation: fix the data or pick another month"
            )
    return df


def prepare_month(raw: pd.DataFrame, request: MonthRequest) -> pd.DataFrame:
    """Duration, the 1–60 minute filter and zone categoricals (the level-2 recipe)."""
    from taxi_common.prepare import prepare_trips

    return prepare_trips(raw, request.color)


def read_cached(request: MonthRequest, settings: Settings) -> pd.DataFrame | None:
    """The cached prepared rows of ``request``, or None when there are none (or unreadable)."""
    path = cache_path(request, settings)
    if not path.exists():
        return None
    try:
        return cast_zones(pd.read_parquet(path))  # the dtypes of a freshly prepared month
    except Exception:  # noqa: BLE001 - a damaged cache file is simply rebuilt
        path.unlink(missing_ok=True)
        return None


def prepared_month(request: MonthRequest, settings: Settings) -> tuple[pd.DataFrame, bool]:
    """Prepared, validated rows of a month and whether they came from the cache.

    On a miss: load, validate the schema, prepare, validate the rows, then cache.
    """
    label = request.label
    cached = read_cached(request, settings)
    if cached is not None:
        return validate_prepared(cached, label), True
    raw = validate_raw_month(load_raw_month(request, settings), request)
    prepared = validate_prepared(prepare_month(raw, request), label)
    with atomic_write(cache_path(request, settings)) as (out, _):
        prepared.to_parquet(out, index=False)
    return prepared, False


def combine_months(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Several prepared months as one frame, zone columns re-cast to one set of categories."""
    if len(frames) == 1:
        return frames[0]
    return cast_zones(pd.concat(frames, ignore_index=True))
