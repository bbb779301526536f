"""Data faults through every pipeline: each fault × pipeline ends in one clear error, or in a
documented handling that is checked here; nothing is left half-made by a fault (no model file,
no cached month, no reference, no scores), and no model is registered from bad data.

The faulty files are made from the real TLC 2021-01..03 files (the first rows, or the days
around the DST change), written to a temporary folder and served by a local HTTP mirror
through ``TLC_BASE_URL``, one sub-folder per fault; nothing is committed. Each pipeline is
called in-process through the function its command calls (``level2 train``: ``train_and_save``;
``level3 train``: the flow's load step ``prepared_month``; ``level4 reference`` and
``actuals`` feeding ``monitor``: ``write_reference`` and ``actuals_through``; ``level4
score-batch``: ``month_file`` and ``score_file``). Level 3's whole flow and its registry, and the
one-line CLI message, are checked through the real ``mlops-levels`` command in
``tests/level3/test_bad_input.py`` (a bad schema, a file of another month), where the session's
Prefect server already runs. Level 5 reads no files: its faults are in
the labelled traffic of its tables, at the end of this file.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from taxi_common.errors import WorkbookError
from taxi_common.settings import Settings
from tests.conftest import _QuietHandler
from tests.http_helpers import serving

pytestmark = pytest.mark.tlc

ROWS = 3000  # the first rows of a real month: enough to train, fast to read
PICKUP, DROPOFF = "lpep_pickup_datetime", "lpep_dropoff_datetime"
DST_DAYS = ("2021-03-13", "2021-03-15")  # the real March trips around the spring-forward change
DST_GAP = (pd.Timestamp("2021-03-14 02:00"), pd.Timestamp("2021-03-14 03:00"))


def _real(tlc_dir: Path, month: str) -> pd.DataFrame:
    return pd.read_parquet(tlc_dir / f"green_tripdata_{month}.parquet")


def _corrupt_column(clean: bytes, path: Path, column: str, row_group: int = 0) -> bytes:
    """``clean`` with the data pages of ``column`` in ``row_group`` overwritten (footer
    intact)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata.row_group(row_group)
    chunk = next(meta.column(i) for i in range(meta.num_columns)
                 if meta.column(i).path_in_schema == column)
    start = chunk.data_page_offset + 40  # past the page header
    data = bytearray(clean)
    data[start:start + 400] = b"\xff" * 400
    return bytes(data)


def _shifted(df: pd.DataFrame, by: pd.DateOffset, rows: slice = slice(None)) -> pd.DataFrame:
    out = df.copy()
    for name in (PICKUP, DROPOFF):
        out.loc[out.index[rows], name] = out[name].iloc[rows] + by
    return out


def _dst_trips(tlc_dir: Path) -> pd.DataFrame:
    march = _real(tlc_dir, "2021-03")
    keep = march[PICKUP].between(pd.Timestamp(DST_DAYS[0]), pd.Timestamp(DST_DAYS[1]) +
                                 pd.Timedelta(days=1), inclusive="left")
    return march.loc[keep].reset_index(drop=True)


def _spanning_gap(df: pd.DataFrame) -> pd.Series:
    return (df[PICKUP] < DST_GAP[0]) & (df[DROPOFF] >= DST_GAP[1])


@dataclass(frozen=True)
class Fault:
    """A faulty month file: its name, its month, and how it is made from the real files."""

    name: str
    month: str
    make: Callable[[Path, Path], None]  # (real files folder, path to write)


def _frame_fault(month: str, change: Callable[[pd.DataFrame], pd.DataFrame]
                 ) -> Callable[[Path, Path], None]:
    def make(tlc_dir: Path, path: Path) -> None:
        change(_real(tlc_dir, month).head(ROWS)).to_parquet(path, index=False)
    return make


def _bytes_fault(change: Callable[[bytes, Path], bytes]) -> Callable[[Path, Path], None]:
    def make(tlc_dir: Path, path: Path) -> None:
        _real(tlc_dir, "2021-01").head(ROWS).to_parquet(path, index=False)
        path.write_bytes(change(path.read_bytes(), path))
    return make


def _dst(tlc_dir: Path, path: Path) -> None:
    _dst_trips(tlc_dir).to_parquet(path, index=False)


FAULTS = {f.name: f for f in (
    Fault("clean", "2021-01", _frame_fault("2021-01", lambda df: df)),
    Fault("truncated", "2021-01", _bytes_fault(lambda data, _: data[:len(data) // 2])),
    Fault("corrupt", "2021-01", _bytes_fault(lambda data, p: _corrupt_column(
        data, p, "trip_distance"))),
    Fault("renamed column", "2021-01", _frame_fault(
        "2021-01", lambda df: df.rename(columns={"trip_distance": "trip_miles"}))),
    Fault("missing column", "2021-01", _frame_fault(
        "2021-01", lambda df: df.drop(columns=["PULocationID"]))),
    Fault("wrong dtype", "2021-01", _frame_fault(
        "2021-01", lambda df: df.astype({PICKUP: str}))),
    Fault("missing zone IDs", "2021-01", _frame_fault(
        "2021-01", lambda df: df.astype({"PULocationID": "float64"}).assign(
            PULocationID=lambda d: d["PULocationID"].mask(d.index < 10)))),
    Fault("fractional zone IDs", "2021-01", _frame_fault(
        "2021-01", lambda df: df.astype({"DOLocationID": "float64"}).assign(
            DOLocationID=lambda d: d["DOLocationID"] + 0.5))),
    Fault("empty month", "2021-01", _frame_fault("2021-01", lambda df: df.head(0))),
    Fault("all outliers", "2021-01", _frame_fault(
        "2021-01", lambda df: df.assign(**{DROPOFF: df[PICKUP] + pd.Timedelta(minutes=90)}))),
    Fault("duplicated rows", "2021-01", _frame_fault(
        "2021-01", lambda df: pd.concat([df, df.head(ROWS // 3)], ignore_index=True))),
    Fault("a few outside the month", "2021-01", _frame_fault(
        "2021-01", lambda df: _shifted(df, pd.DateOffset(years=-12), slice(0, 20)))),
    Fault("outside the month", "2021-01", _frame_fault(
        "2021-01", lambda df: _shifted(df, pd.DateOffset(years=1)))),
    Fault("DST change", "2021-03", _dst),
)}


@pytest.fixture(scope="module")
def mirror(tlc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local HTTP mirror: ``{url}/{fault}/`` holds that fault's month file and the real,
    clean first rows of 2021-02 (the validation month)."""
    root = tmp_path_factory.mktemp("faulty-mirror")
    february = _real(tlc_dir, "2021-02").head(ROWS)
    for fault in FAULTS.values():
        folder = root / _slug(fault.name)
        folder.mkdir()
        fault.make(tlc_dir, folder / f"green_tripdata_{fault.month}.parquet")
        february.to_parquet(folder / "green_tripdata_2021-02.parquet", index=False)
    with serving(functools.partial(_QuietHandler, directory=str(root))) as url:
        yield url


def _slug(name: str) -> str:
    return name.replace(" ", "-")


@pytest.fixture(scope="module")
def clean_model(tlc_dir: Path) -> Any:
    """A linear pipeline fitted on the clean first rows of the real 2021-01."""
    from level2_devops.training import fit_model
    from taxi_common.prepare import prepare_trips

    return fit_model("linear", prepare_trips(_real(tlc_dir, "2021-01").head(ROWS)))


# --- the pipelines, each as its command calls it ------------------------------------------------

def level2_train(settings: Settings, fault: Fault, _model: Any) -> dict[str, Any]:
    """``level2 train --source tlc --train-month M --val-month 2021-02``."""
    from level2_devops.training import TrainConfig, train_and_save

    val = "2021-02"
    result = train_and_save(TrainConfig(train_month=fault.month, val_month=val, source="tlc"),
                            settings=settings)
    return {"rows": result.metadata["data"]["train"]["rows"],
            "fingerprint": result.metadata["data"]["train"]["fingerprint"]}


def level2_leftovers(settings: Settings) -> list[Path]:
    return sorted(settings.models_dir.glob("*")) if settings.models_dir.exists() else []


def level3_load(settings: Settings, fault: Fault, _model: Any) -> dict[str, Any]:
    """The level-3 flow's load step for one month (schema check, preparation, row checks)."""
    from level2_devops.training import data_fingerprint
    from level3_training.data import prepared_month
    from taxi_common.data import MonthRequest

    prepared, _ = prepared_month(MonthRequest(fault.month, source="tlc"), settings)
    return {"rows": len(prepared), "fingerprint": data_fingerprint(prepared)}


def level3_leftovers(settings: Settings) -> list[Path]:
    cache = settings.workbook_home / "cache" / "prepared"
    return sorted(cache.glob("*")) if cache.exists() else []


def level4_monitor_inputs(settings: Settings, fault: Fault, model: Any) -> dict[str, Any]:
    """What ``level4 monitor`` compares: the reference (``level4 reference``) and the actuals
    of the month's traffic (``level4 actuals``, with ``replay``'s ride ids)."""
    from level4_deployment.reference import load_reference, write_reference
    from level4_deployment.traffic import actuals_through

    path = write_reference(model, fault.month, settings=settings, source="tlc",
                           path=settings.workbook_home / "level4" / "reference.parquet")
    found = actuals_through(fault.month, settings=settings, source="tlc")
    return {"rows": len(load_reference(path).frame), "actuals": len(found),
            "ride_ids": len({a["ride_id"] for a in found})}


def level4_leftovers(settings: Settings) -> list[Path]:
    folder = settings.workbook_home / "level4"
    return sorted(folder.glob("*")) if folder.exists() else []


def level4_score_batch(settings: Settings, fault: Fault, model: Any) -> dict[str, Any]:
    """``level4 score-batch --source tlc --month M`` (its flow calls the same two functions)."""
    import pyarrow.parquet as pq

    from level2_devops.service.model_source import serving_model
    from level4_deployment.batch import month_file, score_file

    out = settings.reports_dir / "batch" / f"scores-{fault.month}.parquet"
    result = score_file(month_file(fault.month, settings, source="tlc"),
                        serving_model(model, "1"), "1", out)
    scores = pq.read_table(out).to_pandas()
    return {"rows": result.rows, "scored": result.scored, "ride_ids": scores["ride_id"].nunique(),
            "actual_over_60": int((scores["actual_duration"] > 60).sum())}


def score_leftovers(settings: Settings) -> list[Path]:
    folder = settings.reports_dir / "batch"
    return sorted(folder.glob("*")) if folder.exists() else []


PIPELINES = {"level2 train": (level2_train, level2_leftovers),
             "level3 flow": (level3_load, level3_leftovers),
             "level4 monitor": (level4_monitor_inputs, level4_leftovers),
             "level4 score-batch": (level4_score_batch, score_leftovers)}

# --- what must happen: an error naming these fragments, or a check of the handled outcome --------

Check = Callable[[dict[str, Any], dict[str, Any]], None]  # (outcome, the clean file's outcome)


def same_rows_as_clean(got: dict[str, Any], clean: dict[str, Any]) -> None:
    """The duplicates were dropped: the same rows (same fingerprint) as the clean file."""
    assert got == clean


def twenty_strays_kept(got: dict[str, Any], clean: dict[str, Any]) -> None:
    """The 20 trips moved to 2009 are kept, as the classic recipe keeps the real strays."""
    assert got["rows"] == clean["rows"]


def every_row_scored(extra: int = 0, extra_over_60: int = 0, all_over_60: bool = False,
                     unscored: int = 0) -> Check:
    """Every input row in the output, each with its own ride id, all but ``unscored`` with a
    prediction; ``actual_over_60`` trips of more than an hour (the clean file's, plus
    ``extra_over_60``; all of them with ``all_over_60``)."""
    def check(got: dict[str, Any], clean: dict[str, Any]) -> None:
        assert got["rows"] == clean["rows"] + extra
        assert got["scored"] == clean["scored"] + extra - unscored
        assert got["ride_ids"] == got["rows"]  # identical trips get distinct ride ids
        assert got["actual_over_60"] == (got["rows"] if all_over_60 else
                                         clean["actual_over_60"] + extra_over_60)
    return check


def dst_trips_dropped(got: dict[str, Any], _clean: dict[str, Any]) -> None:
    """Wall-clock durations: the 6 real trips spanning 02:00 on 2021-03-14 look 60 minutes
    longer (67 to 1,410 min) and the 1-60 minute filter drops them all."""
    assert got["rows"] == DST_KEPT


DST_KEPT = 6054  # real March trips picked up 13-15 March that last 1-60 wall-clock minutes
DST_SPANNING = 6

CORRUPT = ("green 2021-01", "cannot be decoded")
ERRORS: dict[str, tuple[str, ...]] = {
    "truncated": ("green 2021-01", "not a valid parquet file"),
    "corrupt": CORRUPT,
    "renamed column": ("column 'trip_distance' is missing",),
    "missing column": ("column 'PULocationID' is missing",),
    "wrong dtype": ("column 'lpep_pickup_datetime' has type", "expected a timestamp"),
    "empty month": ("green 2021-01", "has no rows"),
    "fractional zone IDs": ("column 'DOLocationID' holds 3,000 zone IDs that are not whole "
                            "numbers (for example",),
    "outside the month": ("3,000 of 3,000 trips (100%) were picked up outside 2021-01",
                          "is this the 2021-01 file?"),
}
NO_TRIP_KEPT = ("none of its 3,000 trips lasts 1-60 minutes",)
EXPECTED: dict[tuple[str, str], tuple[str, ...] | Check] = {
    **{(fault, pipeline): fragments for fault, fragments in ERRORS.items()
       for pipeline in PIPELINES},
    **{("missing zone IDs", p): ("tlc green 2021-01: 6 of", "trips have no PULocationID")
       for p in PIPELINES if p != "level4 score-batch"},
    # a ride the service would refuse gets a missing prediction, not a made-up one
    ("missing zone IDs", "level4 score-batch"): every_row_scored(unscored=10),
    ("all outliers", "level2 train"): ("no trips of 2021-01 last 1-60 minutes",),
    ("all outliers", "level3 flow"): ("only 0 usable trips after the 1-60 minute filter",),
    ("all outliers", "level4 monitor"): NO_TRIP_KEPT,
    # scoring predicts from the inputs: a month of long trips is scored like any other
    ("all outliers", "level4 score-batch"): every_row_scored(all_over_60=True),
    ("duplicated rows", "level2 train"): same_rows_as_clean,
    ("duplicated rows", "level3 flow"): same_rows_as_clean,
    ("duplicated rows", "level4 monitor"): same_rows_as_clean,
    # one output row per input row: score-batch scores the file as it is
    ("duplicated rows", "level4 score-batch"): every_row_scored(extra=ROWS // 3, extra_over_60=26),
    **{("a few outside the month", p): twenty_strays_kept for p in PIPELINES
       if p != "level4 score-batch"},
    ("a few outside the month", "level4 score-batch"): every_row_scored(),
    **{("DST change", p): dst_trips_dropped for p in PIPELINES if p != "level4 score-batch"},
}


def test_the_dst_figures_are_those_of_the_real_march(tlc_dir: Path) -> None:
    from taxi_common.prepare import prepare_trips

    trips = _dst_trips(tlc_dir)
    spanning = trips.loc[_spanning_gap(trips)]
    wall = (spanning[DROPOFF] - spanning[PICKUP]).dt.total_seconds() / 60
    assert len(spanning) == DST_SPANNING and wall.min() > 60
    assert len(prepare_trips(trips)) == DST_KEPT
    for name in (PICKUP, DROPOFF):  # no time in the hour that did not exist
        assert not trips[name].between(*DST_GAP, inclusive="left").any()


@pytest.fixture(scope="module")
def clean_outcomes(mirror: str, clean_model: Any, tmp_path_factory: pytest.TempPathFactory
                   ) -> dict[str, dict[str, Any]]:
    """Each pipeline's outcome on the clean file (what the handled faults are compared with)."""
    out = {}
    for name, (run, _) in PIPELINES.items():
        settings = Settings(workbook_home=tmp_path_factory.mktemp("clean") / "workbook",
                            tlc_base_url=f"{mirror}/clean")
        out[name] = run(settings, FAULTS["clean"], clean_model)
    return out


#: Sound files whose rows fail the training recipe: kept in the cache as downloaded (score-batch
#: can use them); every other faulty download is deleted.
KEPT_IN_CACHE = ("all outliers", "missing zone IDs")

CASES = [pytest.param(fault, pipeline, id=f"{_slug(fault)}-{_slug(pipeline)}")
         for fault in FAULTS if fault != "clean" for pipeline in PIPELINES
         if (fault, pipeline) in EXPECTED]


@pytest.mark.parametrize(("fault", "pipeline"), CASES)
def test_fault_through_pipeline(fault: str, pipeline: str, mirror: str, clean_model: Any,
                                clean_outcomes: dict[str, dict[str, Any]],
                                tmp_path: Path) -> None:
    settings = Settings(workbook_home=tmp_path / "workbook",
                        tlc_base_url=f"{mirror}/{_slug(fault)}")
    run, leftovers = PIPELINES[pipeline]
    expected = EXPECTED[(fault, pipeline)]
    if isinstance(expected, tuple):
        with pytest.raises(WorkbookError) as caught:
            run(settings, FAULTS[fault], clean_model)
        message = str(caught.value)
        assert "\n" not in message
        for fragment in expected:
            assert fragment in message, message
        assert leftovers(settings) == []  # nothing half-made
        if fault not in KEPT_IN_CACHE:
            cache = settings.data_cache_dir
            assert not cache.exists() or not any(cache.glob("*.parquet"))  # nothing bad cached
    else:
        expected(run(settings, FAULTS[fault], clean_model), clean_outcomes[pipeline])


def test_every_fault_meets_every_pipeline() -> None:
    """The table is complete: a documented outcome for each fault × pipeline (DST through
    score-batch: scored, see the README; it has its own test below)."""
    missing = [(f, p) for f in FAULTS if f != "clean" for p in PIPELINES
               if (f, p) not in EXPECTED]
    assert missing == [("DST change", "level4 score-batch")]


def test_dst_trips_are_scored_with_their_wall_clock_duration(
        mirror: str, clean_model: Any, tmp_path: Path, tlc_dir: Path) -> None:
    """Score-batch scores all trips of the DST days; the spanning ones carry their wall-clock
    ``actual_duration`` (60 minutes more than they took), as the TLC records local time."""
    import pyarrow.parquet as pq

    settings = Settings(workbook_home=tmp_path / "workbook",
                        tlc_base_url=f"{mirror}/{_slug('DST change')}")
    got = level4_score_batch(settings, FAULTS["DST change"], clean_model)
    trips = _dst_trips(tlc_dir)
    assert got["rows"] == len(trips)
    assert got["scored"] == len(trips) - 1  # one trip claims 71,488 miles: no prediction
    scores = pq.read_table(next(iter(score_leftovers(settings)))).to_pandas()
    spanning = scores.loc[_spanning_gap(trips).to_numpy()]
    assert len(spanning) == DST_SPANNING and (spanning["actual_duration"] > 60).all()


def test_the_loader_warns_of_what_it_drops_and_keeps(mirror: str, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Nothing is dropped or kept silently: duplicates and strays are counted in a warning."""
    from taxi_common.data import load_trips

    for fault, text in (("duplicated rows", f"dropped {ROWS // 3} exact duplicate rows of "
                                            f"{ROWS + ROWS // 3}"),
                        ("a few outside the month", "20 of 3000 trips picked up outside "
                                                    "2021-01, kept")):
        settings = Settings(workbook_home=tmp_path / _slug(fault),
                            tlc_base_url=f"{mirror}/{_slug(fault)}")
        with caplog.at_level(logging.WARNING, logger="taxi_common.schema"):
            load_trips("2021-01", settings=settings, source="tlc")
        assert text in caplog.text


def test_score_batch_file_faults(mirror: str, clean_model: Any, tmp_path: Path,
                                 tlc_dir: Path) -> None:
    """``score-batch --file``: a truncated file, a renamed column and a row group that does not
    decode each end in one clear error, and no output file appears."""
    from level2_devops.service.model_source import serving_model
    from level4_deployment.batch import score_file

    cases = {"truncated": ("not a valid parquet file",),
             "renamed column": ("column 'trip_distance' is missing",),
             "corrupt": ("cannot be decoded",)}
    for fault, fragments in cases.items():
        path = tmp_path / f"{_slug(fault)}.parquet"
        FAULTS[fault].make(tlc_dir, path)
        out = tmp_path / "out" / f"{_slug(fault)}.parquet"
        with pytest.raises(WorkbookError) as caught:
            score_file(path, serving_model(clean_model, "1"), "1", out)
        assert all(f in str(caught.value) for f in fragments), caught.value
        assert str(path) in str(caught.value)
        assert not out.exists()
        assert not out.parent.exists() or not any(out.parent.iterdir())  # no temporary left


def test_score_batch_a_later_row_group_that_does_not_decode(clean_model: Any, tmp_path: Path,
                                                             tlc_dir: Path) -> None:
    """The file's checks read the first row group only: a second one that does not decode
    fails the run with one line naming it, after the first was scored, and no output appears."""
    from level2_devops.service.model_source import serving_model
    from level4_deployment.batch import score_file

    path = tmp_path / "two-groups.parquet"
    _real(tlc_dir, "2021-01").head(ROWS).to_parquet(path, index=False,
                                                     row_group_size=ROWS // 2)
    path.write_bytes(_corrupt_column(path.read_bytes(), path, "trip_distance", row_group=1))
    out = tmp_path / "out" / "scores.parquet"
    with pytest.raises(WorkbookError, match="row group 1 cannot be decoded"):
        score_file(path, serving_model(clean_model, "1"), "1", out)
    assert not out.exists() and not any(out.parent.iterdir())


def test_level4_monitors_the_dst_day(mirror: str, clean_model: Any, tmp_path: Path) -> None:
    """``level4 monitor`` of 2021-03-14 (23 hours) on its real trips, served and labelled:
    the day's report runs on every kept trip picked up that day."""
    from level4_deployment.monitoring import monitor_day
    from level4_deployment.monitoring_config import load_config
    from level4_deployment.reference import load_reference
    from level4_deployment.store import create_tables, engine_for, record_actuals, write_predictions
    from level4_deployment.traffic import actual_rows, month_traffic, served_rows

    settings = Settings(workbook_home=tmp_path / "workbook",
                        tlc_base_url=f"{mirror}/{_slug('DST change')}")
    monitored = level4_monitor_inputs(settings, FAULTS["DST change"], clean_model)
    assert monitored["rows"] == DST_KEPT
    engine = engine_for(settings)
    create_tables(engine)
    traffic = month_traffic("2021-03", settings=settings, source="tlc")
    day = dt.date(2021, 3, 14)
    that_day = traffic[traffic["pickup_datetime"].dt.date == day]
    write_predictions(engine, served_rows(that_day, clean_model, "1"))
    record_actuals(engine, actual_rows(that_day))
    result = monitor_day(day, engine=engine, config=load_config(None), settings=settings,
                         reference=load_reference(settings.workbook_home / "level4" /
                                                  "reference.parquet"),
                         by="pickup", html=False, workspace=False)
    engine.dispose()
    assert result.rows == len(that_day) > 1000
    assert result.metrics["labelled_rows"] == len(that_day)
    assert result.metrics["rmse"] > 0


# --- level 5: its retraining reads labelled traffic from level 4's tables -----------------------

@dataclass
class _LoopHome:
    loop: Any
    traffic: pd.DataFrame
    champion: str


@pytest.fixture(scope="module")
def mlflow_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the empty MLflow store is made once for this module's loops."""
    return tmp_path_factory.mktemp("mlflow-cache")


@pytest.fixture
def loop_home(tmp_path: Path, mlflow_cache: Path) -> Iterator[_LoopHome]:
    """A level-5 loop on SQLite and a SQLite MLflow store, with a first champion (linear, on
    synthetic 2021-01 days 1-7, judged on day 8), and the synthetic traffic of days 9-14."""
    import shutil

    from level4_deployment.store import create_tables, engine_for
    from level4_deployment.traffic import month_traffic
    from level5_automation.events import create_events_table
    from level5_automation.loop import Loop, bootstrap
    from level5_automation.simulation import empty_mlflow_store
    from level5_automation.training import DayWindow
    from tests.level5.conftest import policy_with

    settings = Settings(workbook_home=tmp_path / "workbook")
    settings.workbook_home.mkdir(parents=True)
    shutil.copy(empty_mlflow_store(mlflow_cache), settings.workbook_home / "mlflow.db")
    engine = engine_for(settings)
    create_tables(engine)
    create_events_table(engine)
    policy = policy_with(window={"days": 5, "holdout_days": 1, "min_rows": 300},
                         training={"models": ["linear"], "trials": 1, "params": {}},
                         triggers={"min_new_rows": 1})
    loop = Loop(settings, engine, policy)
    traffic = month_traffic("2021-01", settings=settings, rows=2600)
    days = traffic["pickup_datetime"].dt.day
    train, holdout = traffic[days <= 7], traffic[days == 8]
    champion = bootstrap(loop, dt.date(2021, 1, 8), train, holdout,
                         DayWindow(dt.date(2021, 1, 1), dt.date(2021, 1, 7)),
                         DayWindow(dt.date(2021, 1, 8), dt.date(2021, 1, 8)))
    try:
        yield _LoopHome(loop, traffic[days.between(9, 14)].reset_index(drop=True), champion)
    finally:
        engine.dispose()


def _serve_and_label(home: _LoopHome, traffic: pd.DataFrame, *, twice: bool = False) -> None:
    from level4_deployment.store import record_actuals, write_predictions
    from level4_deployment.traffic import actual_rows, served_rows

    rows = served_rows(traffic, home.loop.pipeline(home.champion), home.champion)
    write_predictions(home.loop.engine, rows + (rows if twice else []))
    record_actuals(home.loop.engine, actual_rows(traffic))


def _tick(home: _LoopHome) -> Any:
    from level5_automation.loop import tick

    return tick(home.loop, dt.date(2021, 1, 15), dt.date(2021, 1, 14), force="data-fault test")


def _versions(home: _LoopHome) -> list[str]:
    from level3_training.registry import list_versions

    return [row["version"] for row in list_versions(home.loop.client())]


@pytest.mark.slow
def test_level5_retrain_on_outlier_actuals_waits_and_registers_nothing(
        loop_home: _LoopHome) -> None:
    """Actuals that are all outliers (a labelling fault: every trip 90 minutes): the loop
    counts no usable labelled ride, waits, registers nothing, the champion stays."""
    bad = loop_home.traffic.assign(duration=90.0)
    _serve_and_label(loop_home, bad)
    result = _tick(loop_home)
    assert not result.decision.retrain
    assert "only 0 labelled rides in 2021-01-09..2021-01-13" in result.decision.reason
    assert _versions(loop_home) == [loop_home.champion]
    assert result.champion == loop_home.champion and not result.champion_changed


@pytest.mark.slow
def test_level5_retrain_on_an_empty_window_waits(loop_home: _LoopHome) -> None:
    result = _tick(loop_home)  # no traffic served or labelled after day 8
    assert not result.decision.retrain and "only 0 labelled rides" in result.decision.reason
    assert _versions(loop_home) == [loop_home.champion]


@pytest.mark.slow
def test_level5_retrain_counts_a_ride_logged_twice_once(loop_home: _LoopHome) -> None:
    """Each prediction logged twice (a writer retried a batch): the challenger learns from each
    ride once, and is judged on the holdout day as usual."""
    from level5_automation.training import DayWindow, labelled_rows

    _serve_and_label(loop_home, loop_home.traffic, twice=True)
    window = DayWindow(dt.date(2021, 1, 9), dt.date(2021, 1, 13))
    expected = int((loop_home.traffic["pickup_datetime"].dt.day <= 13).sum())
    assert len(labelled_rows(loop_home.loop.engine, window)) == expected
    result = _tick(loop_home)
    retrain = next(e for e in result.events if e.kind == "retrain")
    assert retrain.details["rows"] == expected
    assert any(e.kind in ("promote", "reject") for e in result.events)
    assert [e for e in result.events if e.kind == "error"] == []
