"""Scale: each pipeline on a 3M-row synthetic month, wall time and peak memory, in one run.

    python -m benchmarks.bench_scale [--rows 3000000] [--repeats 1] [--only NAME ...]

The size of a yellow-taxi month. The parent writes synthetic 2021-01 and 2021-02 of ``--rows``
trips each to parquet once (``taxi_common.synthetic.write_month``), and every measurement runs in a
fresh child interpreter that reports its own wall time and peak RSS (``VmHWM``, see
:func:`benchmarks.bench_level4_batch.peak_rss_mb` for why not ``ru_maxrss``):

- ``level2_train``: level 2's training on the two files — ``prepare_trips`` of each file's
  five columns it reads (``read_parquet(columns=input_columns())``, as level 2's training keeps
  only those), ``fit_model("linear")``, RMSE/MAE on both months, the versioned model file saved;
- ``classic_train``: the course notebook's recipe on the same files — ``read_parquet``, the
  duration, the 1-60 minute filter, ``astype(str)``, a PU_DO string and a dict per trip,
  ``DictVectorizer`` + ``LinearRegression``, RMSE on February, the ``(dv, model)`` pickle;
- ``level2_train_cli``: what ``mlops-levels level2 train --rows N`` runs
  (``train_and_save``): the same, with both synthetic months *generated* in the process;
- ``level3_flow``: ``level3 train --models linear,hist_gb --trials 1 --rows N`` — the Prefect
  flow with MLflow tracking and registration, against a Prefect server the parent started (the
  server's memory is not the child's);
- ``level4_batch`` / ``classic_batch``: ``level4_deployment.batch.score_file`` and the course's
  score.py (``benchmarks/level4_baseline_batch.py``) on the February file;
- ``monitoring_day``: ``level4_deployment.monitoring.monitor_day`` for one day of that month — a
  day's share (1/28) of the trips logged as served, with their actuals — against the reference of
  the champion (its validation month with predictions), Evidently report, HTML and workspace
  snapshot included.

Children run one after another (``--repeats`` rounds, medians); the ratios are level 2 over the
classic recipe for training and level 4 over score.py for batch scoring.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_level4_batch import peak_rss_mb

ROOT = Path(__file__).resolve().parent.parent
TRAIN, VAL = "2021-01", "2021-02"
TARGETS = {"level2_train_seconds_max": 20.0, "level2_train_peak_mb_max": 2000.0,
           "level2_over_classic_max": 0.5}


# --- the children (each in a fresh interpreter: argv = work folder, rows) --------------------

def _files(work: Path) -> tuple[Path, Path]:
    return work / f"green_{TRAIN}.parquet", work / f"green_{VAL}.parquet"


def _child_level2_train(work: Path, rows: int) -> dict[str, Any]:
    import pandas as pd

    from level2_devops.model_store import save_model
    from level2_devops.training import evaluate, fit_model
    from taxi_common.prepare import input_columns, prepare_trips

    train_file, val_file = _files(work)
    began = time.perf_counter()
    train = prepare_trips(pd.read_parquet(train_file, columns=input_columns()))
    val = prepare_trips(pd.read_parquet(val_file, columns=input_columns()))
    pipeline = fit_model("linear", train)
    scores = {"train": evaluate(pipeline, train), "val": evaluate(pipeline, val)}
    save_model(pipeline, {"model": "linear"}, work / "models-level2")
    return {"seconds": time.perf_counter() - began, "rows": len(train),
            "val_rmse": scores["val"]["rmse"]}


def _child_classic_train(work: Path, rows: int) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LinearRegression

    def read_dataframe(filename: Path) -> pd.DataFrame:
        """The course notebook's, with ``dt.total_seconds()`` for its per-row ``apply``."""
        df = pd.read_parquet(filename)
        df["duration"] = df.lpep_dropoff_datetime - df.lpep_pickup_datetime
        df["duration"] = df.duration.dt.total_seconds() / 60
        df = df[(df.duration >= 1) & (df.duration <= 60)].copy()
        categorical = ["PULocationID", "DOLocationID"]
        df[categorical] = df[categorical].astype(str)
        return df

    train_file, val_file = _files(work)
    began = time.perf_counter()
    df_train, df_val = read_dataframe(train_file), read_dataframe(val_file)
    df_train["PU_DO"] = df_train["PULocationID"] + "_" + df_train["DOLocationID"]
    df_val["PU_DO"] = df_val["PULocationID"] + "_" + df_val["DOLocationID"]
    features = ["PU_DO", "trip_distance"]
    dv = DictVectorizer()
    x_train = dv.fit_transform(df_train[features].to_dict(orient="records"))
    x_val = dv.transform(df_val[features].to_dict(orient="records"))
    y_train, y_val = df_train["duration"].values, df_val["duration"].values
    lr = LinearRegression().fit(x_train, y_train)
    rmse = float(np.sqrt(np.mean((lr.predict(x_val) - y_val) ** 2)))
    (work / "classic-lin_reg.bin").write_bytes(pickle.dumps((dv, lr)))
    return {"seconds": time.perf_counter() - began, "rows": len(df_train), "val_rmse": rmse}


def _child_level2_train_cli(work: Path, rows: int) -> dict[str, Any]:
    from level2_devops.training import TrainConfig, train_and_save
    from taxi_common.settings import Settings

    began = time.perf_counter()
    result = train_and_save(TrainConfig(train_month=TRAIN, val_month=VAL, n_rows=rows),
                            settings=Settings(workbook_home=work / "home-cli"))
    return {"seconds": time.perf_counter() - began,
            "rows": result.metadata["data"]["train"]["rows"],
            "val_rmse": result.metadata["metrics"]["val_rmse"]}


def _child_level3_flow(work: Path, rows: int) -> dict[str, Any]:
    from level3_training.pipeline import TrainConfig, run_training
    from taxi_common.settings import Settings

    config = TrainConfig((TRAIN,), VAL, models=("linear", "hist_gb"), trials=1, n_rows=rows)
    began = time.perf_counter()
    summary = run_training(config, Settings(workbook_home=work / "home-level3"))
    return {"seconds": time.perf_counter() - began, "rows": rows,
            "best": {k: summary.get(k) for k in ("best_model", "best_val_rmse") if k in summary}}


def _child_level4_batch(work: Path, rows: int) -> dict[str, Any]:
    from level2_devops.model_store import latest_model, load_model
    from level2_devops.service.model_source import serving_model
    from level4_deployment.batch import score_file

    model = serving_model(load_model(latest_model(work / "models-level2"))[0], "1")
    began = time.perf_counter()
    result = score_file(_files(work)[1], model, "1", work / "scores-level4.parquet")
    return {"seconds": time.perf_counter() - began, "rows": result.rows}


def _child_classic_batch(work: Path, rows: int) -> dict[str, Any]:
    from benchmarks.level4_baseline_batch import apply_model

    began = time.perf_counter()
    n = apply_model(str(_files(work)[1]), str(work / "classic-lin_reg.bin"),
                    str(work / "scores-classic.parquet"), "1")
    return {"seconds": time.perf_counter() - began, "rows": n}


def _child_monitoring_day(work: Path, rows: int) -> dict[str, Any]:
    import datetime as dt

    from level4_deployment import monitoring, store
    from level4_deployment.monitoring_config import load_config
    from level4_deployment.reference import load_reference
    from taxi_common.settings import Settings

    settings = Settings(workbook_home=work / "home-monitoring")
    engine = store.engine_for(settings)
    day = dt.date.fromisoformat(json.loads((work / "monitoring-day.json").read_text())["day"])
    began = time.perf_counter()
    result = monitoring.monitor_day(day, engine=engine,
                                    reference=load_reference(work / "reference.parquet"),
                                    config=load_config(), settings=settings, by="pickup")
    return {"seconds": time.perf_counter() - began, "rows": result.rows,
            "drift_share": result.metrics.get("drift_share")}


CHILDREN = {"level2_train": _child_level2_train, "classic_train": _child_classic_train,
            "level2_train_cli": _child_level2_train_cli, "level3_flow": _child_level3_flow,
            "level4_batch": _child_level4_batch, "classic_batch": _child_classic_batch,
            "monitoring_day": _child_monitoring_day}


def run_child(name: str, work: Path, rows: int, env: dict[str, str]) -> dict[str, Any]:
    """One measurement in a fresh interpreter: its answer plus its own peak RSS in MB."""
    cmd = [sys.executable, "-m", "benchmarks.bench_scale", "--child", name, "--work", str(work),
           "--rows", str(rows)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed with exit code {done.returncode}: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the parent ------------------------------------------------------------------------------

def prepare_monitoring(work: Path, rows: int) -> dict[str, Any]:
    """One day of the scored month in a prediction log, with actuals, and the champion's
    reference, under ``work/home-monitoring`` (set up here, not timed)."""
    import pandas as pd

    from level2_devops.model_store import latest_model, load_model
    from level4_deployment import store, traffic
    from level4_deployment.reference import reference_frame, write_reference_frame
    from taxi_common.prepare import prepare_trips

    pipeline, _ = load_model(latest_model(work / "models-level2"))
    month = prepare_trips(pd.read_parquet(_files(work)[1]))
    month["ride_id"] = traffic.ride_id_for(month)  # from the green column names
    month = month.rename(columns={"lpep_pickup_datetime": "pickup_datetime",
                                  "lpep_dropoff_datetime": "dropoff_datetime"})
    sample = month.sample(min(200_000, len(month)), random_state=0)
    write_reference_frame(reference_frame(pipeline, sample),
                          work / "reference.parquet", model_version="1", month=VAL,
                          source="synthetic")
    day = month["pickup_datetime"].dt.date.mode().iloc[0]
    picked = month[month["pickup_datetime"].dt.date == day].copy()
    picked["PULocationID"] = picked["PULocationID"].astype("int64")
    picked["DOLocationID"] = picked["DOLocationID"].astype("int64")
    settings_home = work / "home-monitoring"
    from taxi_common.settings import Settings

    engine = store.engine_for(Settings(workbook_home=settings_home))
    store.create_tables(engine)
    store.write_predictions(engine, traffic.served_rows(picked, pipeline, "1"))
    store.record_actuals(engine, traffic.actual_rows(picked))
    engine.dispose()
    (work / "monitoring-day.json").write_text(json.dumps({"day": day.isoformat(),
                                                          "rows": len(picked)}))
    return {"day": day.isoformat(), "rows": len(picked)}


def summarise(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians per measurement, the ratios against the classic recipes, the targets."""
    med = {name: {"seconds": statistics.median(s["seconds"] for s in runs),
                  "peak_rss_mb": statistics.median(s["peak_rss_mb"] for s in runs)}
           for name, runs in samples.items() if runs}
    ratios: dict[str, float] = {}
    for ours, theirs in (("level2_train", "classic_train"), ("level4_batch", "classic_batch")):
        if ours in med and theirs in med:
            ratios[f"{ours}_over_{theirs}_seconds"] = (med[ours]["seconds"]
                                                       / med[theirs]["seconds"])
            ratios[f"{ours}_over_{theirs}_peak_rss"] = (med[ours]["peak_rss_mb"]
                                                        / med[theirs]["peak_rss_mb"])
    met: dict[str, bool] = {}
    for name in ("level2_train", "level2_train_cli"):
        if name in med:
            met[f"{name}_under_20_s"] = (
                med[name]["seconds"] <= TARGETS["level2_train_seconds_max"])
            met[f"{name}_under_2_gb"] = (
                med[name]["peak_rss_mb"] <= TARGETS["level2_train_peak_mb_max"])
    if "level2_train_over_classic_train_seconds" in ratios:
        half = TARGETS["level2_over_classic_max"]
        met["level2_at_most_half_classic_time"] = (
            ratios["level2_train_over_classic_train_seconds"] <= half)
        met["level2_at_most_half_classic_memory"] = (
            ratios["level2_train_over_classic_train_peak_rss"] <= half)
    return {"medians": med, "ratios": ratios, "targets": TARGETS, "targets_met": met}


ORDER = ("level2_train", "classic_train", "level2_train_cli", "level4_batch", "classic_batch",
         "monitoring_day", "level3_flow")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000, help="trips per month")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", nargs="*", choices=ORDER, help="run only these")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        answer = CHILDREN[args.child](args.work, args.rows)
        print(json.dumps({**answer, "peak_rss_mb": peak_rss_mb()}, default=str), flush=True)
        return

    names = [n for n in ORDER if not args.only or n in args.only]
    for needed, by in (("level2_train", ("level4_batch", "monitoring_day")),
                       ("classic_train", ("classic_batch",))):
        if any(n in names for n in by) and needed not in names:
            names.insert(0, needed)  # the model files the others score with
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true",
           "PREFECT_LOGGING_LEVEL": "WARNING", "WORKBOOK_HOME": str(work / "home")}
    env.pop("DATABASE_URL", None)
    server = None
    try:
        from taxi_common.synthetic import write_month

        began = time.perf_counter()
        for month, path in zip((TRAIN, VAL), _files(work), strict=True):
            write_month(month, path, n_rows=args.rows)
        print(f"{args.rows:,} trips of {TRAIN} and {VAL} written in "
              f"{time.perf_counter() - began:.1f} s", flush=True)
        if "level3_flow" in names:
            from level3_training.prefect_server import start_server

            server = start_server(work / "prefect-server")
            env.update({"PREFECT_API_URL": server.api_url,
                        "PREFECT_HOME": str(work / "prefect-client"),
                        "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
        samples: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        load_before, loads = os.getloadavg(), []
        monitoring_setup = None
        for _ in range(args.repeats):
            for name in names:
                if name == "monitoring_day" and monitoring_setup is None:
                    monitoring_setup = prepare_monitoring(work, args.rows)
                result = run_child(name, work, args.rows, env)
                loads.append(os.getloadavg()[0])
                samples[name].append(result)
                print(f"  {name:18} {result['seconds']:8.1f} s  peak RSS "
                      f"{result['peak_rss_mb']:7,.0f} MB  ({result.get('rows', 0):,} rows)",
                      flush=True)
        load_after = os.getloadavg()
        summary = summarise(samples)
        print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["ratios"].items()))
        print("targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}"
                                      for k, v in summary["targets_met"].items()))
        results = {
            **summary, "samples": samples, "monitoring_day": monitoring_setup,
            "conditions": {
                "rows_per_month": args.rows, "repeats": args.repeats,
                "data": f"synthetic {TRAIN} (train) and {VAL} (validation, scoring), "
                        f"{args.rows} raw trips each, parquet",
                "timed": "inside a fresh child process each; peak RSS = the child's VmHWM",
                "cpus": os.cpu_count(), "load_average_before": load_before,
                "load_average_after": load_after,
                "load_average_1min_during": [min(loads), statistics.median(loads), max(loads)]
                if loads else None,
                "python": platform.python_version(), "machine": platform.machine(),
                "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            },
        }
        from benchmarks.common import write_results

        print(f"results: {write_results('scale', results)}")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
