"""Level 4's batch scoring against the classic per-month course script, in one run.

    python -m benchmarks.bench_level4_batch [--rows 3000000] [--repeats 3] [--end-to-end]

Both sides score the same synthetic month (``taxi_common.synthetic.write_month``, default
3,000,000 trips, row groups of about a million) from the same parquet file into a new parquet
file, with a LinearRegression fitted on the same training month (the same matrix, so the same
model; a check compares the predictions):

- ``level4``: ``level4_deployment.batch.score_file``, the in-process core that ``mlops-levels
  level4 score-batch`` runs (one row group at a time, level 2's serving model: the zone-pair
  lookup), with the model loaded before the clock starts (its load time is reported);
- ``baseline``: ``benchmarks/level4_baseline_batch.py``, the course's score.py recipe (the whole
  month in memory, a dict per trip, DictVectorizer, a uuid4 per trip), pickle load included.

Each side runs in its own subprocess, alternating, ``--repeats`` times; the child times the
scoring call and reports its own peak RSS (``VmHWM``: pyarrow's buffers included, which
tracemalloc does not see; :func:`peak_rss_mb` says why not ``ru_maxrss``). A third child only
imports what both sides import: the floor of every peak; a fourth times level 4's stages on the
first row group. ``--end-to-end`` also times the whole command once, ``mlops-levels level4
score-batch --file`` (threads) and ``--local-dask``, against a registered champion and a
Prefect server.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TARGET_SPEEDUP = 5.0


# --- the children ---------------------------------------------------------------------------

def _child_level4(model_file: Path, trips: Path, out: Path) -> dict[str, Any]:
    from level2_devops.model_store import load_model
    from level2_devops.service.model_source import serving_model
    from level4_deployment.batch import score_file

    began = time.perf_counter()
    pipeline, _ = load_model(model_file)
    model = serving_model(pipeline, "1")
    load = time.perf_counter() - began
    began = time.perf_counter()
    result = score_file(trips, model, "1", out)
    return {"seconds": time.perf_counter() - began, "rows": result.rows,
            "model_load_seconds": load, "row_groups": result.row_groups}


def _child_baseline(model_file: Path, trips: Path, out: Path) -> dict[str, Any]:
    from benchmarks.level4_baseline_batch import apply_model

    began = time.perf_counter()
    rows = apply_model(str(trips), str(model_file), str(out), "1")
    return {"seconds": time.perf_counter() - began, "rows": rows}


def _child_breakdown(model_file: Path, trips: Path, out: Path) -> dict[str, Any]:
    """Where level 4's time goes, stage by stage, on the first row group."""
    from level2_devops.model_store import load_model
    from level2_devops.service.model_source import serving_model
    from level4_deployment.batch import ScoreWriter, read_row_group, score_table
    from level4_deployment.traffic import ride_id_hex

    model = serving_model(load_model(model_file)[0], "1")
    stages: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        began = time.perf_counter()
        value = fn()
        stages[name] = time.perf_counter() - began
        return value

    table = timed("read_row_group (5 columns)", lambda: read_row_group(trips, 0))
    frame = timed("to_pandas", table.to_pandas)
    timed("ride_id_hex", lambda: ride_id_hex(frame))
    scored = timed("score_table (ride ids included)", lambda: score_table(table, model, "1"))

    def write() -> None:
        with ScoreWriter(out) as writer:
            writer.write(scored)

    timed("write (one ParquetWriter)", write)
    return {"seconds": sum(stages.values()), "rows": len(frame), "stages": stages}


def _child_imports(*_: Path) -> dict[str, Any]:
    import pyarrow.parquet  # noqa: F401
    import sklearn.linear_model  # noqa: F401

    import benchmarks.level4_baseline_batch  # noqa: F401
    import level2_devops.model_store  # noqa: F401
    import level2_devops.service.model_source  # noqa: F401
    import level4_deployment.batch  # noqa: F401
    import level4_deployment.traffic  # noqa: F401

    return {"seconds": 0.0, "rows": 0}


CHILDREN = {"level4": _child_level4, "baseline": _child_baseline, "imports": _child_imports,
            "breakdown": _child_breakdown}


def peak_rss_mb() -> float:
    """This process's peak resident set since it started (``VmHWM``), in MB.

    Not ``ru_maxrss``: on Linux a child's ``ru_maxrss`` (and so ``RUSAGE_CHILDREN`` and
    ``wait4``) starts from its parent's peak, carried across fork and exec, so a child of a big
    parent reports the parent's size. ``VmHWM`` belongs to the address space exec made.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def run_child(name: str, model_file: Path, trips: Path, out: Path) -> dict[str, Any]:
    """Run one side in a fresh interpreter; its JSON answer plus its own peak RSS in MB."""
    cmd = [sys.executable, "-m", "benchmarks.bench_level4_batch", "--child", name,
           "--child-args", str(model_file), str(trips), str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed with exit code {done.returncode}: {done.stderr[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the parent -----------------------------------------------------------------------------

def prepare(workdir: Path, train_month: str, score_month: str, rows: int) -> tuple[Path, Path,
                                                                                  Path]:
    """The training fit on ``train_month`` (our model file, the baseline's pickle) and the
    synthetic ``score_month`` of ``rows`` trips as parquet."""
    from benchmarks.bench_level2_service import fit_models
    from level2_devops.training import load_prepared_month
    from taxi_common.settings import Settings
    from taxi_common.synthetic import write_month

    train = load_prepared_month(train_month, settings=Settings(workbook_home=workdir / "home"),
                                source="synthetic")
    ours, baseline = fit_models(train, workdir)
    trips = write_month(score_month, workdir / f"green_{score_month}_{rows}.parquet",
                        n_rows=rows)
    return ours, baseline, trips


def compare_outputs(ours: Path, baseline: Path) -> dict[str, Any]:
    """Row counts, and the largest difference of the predictions where level 4 gave one (it
    leaves trips the service would refuse unscored: a distance beyond 200 miles)."""
    import numpy as np
    import pandas as pd

    a = pd.read_parquet(ours, columns=["predicted_duration", "actual_duration"])
    b = pd.read_parquet(baseline, columns=["predicted_duration", "actual_duration"])
    scored = a["predicted_duration"].notna().to_numpy()
    diff = np.abs(a["predicted_duration"].to_numpy()[scored]
                  - b["predicted_duration"].to_numpy()[scored])
    return {"rows": [len(a), len(b)], "level4_unscored": int((~scored).sum()),
            "max_abs_difference_minutes": float(diff.max()) if len(diff) else 0.0,
            "same_actuals": bool(np.allclose(a["actual_duration"], b["actual_duration"]))}


def end_to_end(workdir: Path, pipeline_file: Path, trips: Path, month: str) -> dict[str, Any]:
    """``mlops-levels level4 score-batch --file`` once on threads and once with --local-dask,
    against a registered champion (SQLite MLflow store) and a Prefect server of its own."""
    from benchmarks.bench_level4_service import register_pipeline
    from level2_devops.model_store import load_model
    from level2_devops.training import load_prepared_month
    from level3_training.prefect_server import start_server
    from level3_training.runtime import environment_defaults
    from taxi_common.settings import Settings

    settings = Settings(workbook_home=workdir / "e2e-home")
    pipeline, _ = load_model(pipeline_file)
    train = load_prepared_month("2021-01", settings=settings, source="synthetic")
    register_pipeline(settings, pipeline, train, alias="champion", description="benchmark")
    server = start_server(settings.prefect_home / "server")
    out: dict[str, Any] = {}
    try:
        env = {**os.environ, **environment_defaults(settings), "PREFECT_API_URL": server.api_url,
               "WORKBOOK_HOME": str(settings.workbook_home),
               "MLFLOW_TRACKING_URI": settings.tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true",
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        for label, extra in (("threads", []), ("local_dask", ["--local-dask"])):
            cmd = [str(BIN / "mlops-levels"), "level4", "score-batch", "--month", month,
                   "--file", str(trips), "--out", str(workdir / f"e2e-{label}.parquet"),
                   "--json", *extra]
            began = time.perf_counter()
            done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                                  timeout=1800)
            wall = time.perf_counter() - began
            if done.returncode != 0:
                out[label] = {"error": (done.stderr or done.stdout)[-800:]}
                continue
            summary = json.loads(done.stdout[done.stdout.index("{"):])
            out[label] = {"wall_seconds": wall, "flow_seconds": summary["seconds"],
                          "rows": summary["rows"], "rows_per_s_wall": summary["rows"] / wall,
                          "rows_per_s_flow": summary["rows"] / summary["seconds"]}
            print(f"  end to end, {label}: {wall:.1f} s for the command, {summary['seconds']:.1f} "
                  f"s in the flow, {summary['rows'] / wall:,.0f} rows/s overall", flush=True)
    finally:
        server.stop()
    return out


def summarise(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians per side and the ratios."""
    med = {name: {"seconds": statistics.median(s["seconds"] for s in runs),
                  "rows_per_s": statistics.median(s["rows"] / s["seconds"] for s in runs),
                  "peak_rss_mb": statistics.median(s["peak_rss_mb"] for s in runs)}
           for name, runs in samples.items()}
    ours, base = med["level4"], med["baseline"]
    ratios = {"rows_per_s": ours["rows_per_s"] / base["rows_per_s"],
              "peak_rss_baseline_over_level4": base["peak_rss_mb"] / ours["peak_rss_mb"]}
    return {"medians": med, "ratios": ratios, "target_rows_per_s": TARGET_SPEEDUP,
            "target_met": ratios["rows_per_s"] >= TARGET_SPEEDUP}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000, help="trips of the scored month")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-month", default="2021-01")
    parser.add_argument("--month", default="2021-02", help="synthetic month to score")
    parser.add_argument("--end-to-end", action="store_true",
                        help="also time `level4 score-batch` (threads, --local-dask) once")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--child-args", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        answer = CHILDREN[args.child](*args.child_args)
        print(json.dumps({**answer, "peak_rss_mb": peak_rss_mb()}), flush=True)
        return

    workdir = Path(tempfile.mkdtemp(prefix="bench-level4-batch-"))
    try:
        began = time.perf_counter()
        ours_model, baseline_model, trips = prepare(workdir, args.train_month, args.month,
                                                    args.rows)
        print(f"{args.rows:,} trips of {args.month} written in {time.perf_counter() - began:.1f} s"
              f" ({trips.stat().st_size / 1e6:.0f} MB)", flush=True)
        outputs = {name: workdir / f"out-{name}.parquet" for name in ("level4", "baseline")}
        floor = run_child("imports", ours_model, trips, workdir / "unused.parquet")
        print(f"  imports only: peak RSS {floor['peak_rss_mb']:.0f} MB", flush=True)
        samples: dict[str, list[dict[str, Any]]] = {"level4": [], "baseline": []}
        models = {"level4": ours_model, "baseline": baseline_model}
        load_before, loads = os.getloadavg(), []
        for repeat in range(args.repeats):
            order = ["level4", "baseline"] if repeat % 2 == 0 else ["baseline", "level4"]
            for name in order:
                result = run_child(name, models[name], trips, outputs[name])
                loads.append(os.getloadavg()[0])
                samples[name].append(result)
                print(f"  {name:8} {result['seconds']:7.2f} s  "
                      f"{result['rows'] / result['seconds']:12,.0f} rows/s  "
                      f"peak RSS {result['peak_rss_mb']:6.0f} MB", flush=True)
        load_after = os.getloadavg()
        breakdown = run_child("breakdown", ours_model, trips, workdir / "breakdown.parquet")
        print("level 4, first row group ({:,} rows), seconds: ".format(breakdown["rows"])
              + ", ".join(f"{k} {v:.2f}" for k, v in breakdown["stages"].items()), flush=True)
        check = compare_outputs(outputs["level4"], outputs["baseline"])
        print(f"outputs: {check}")
        summary = summarise(samples)
        med, ratios = summary["medians"], summary["ratios"]
        print(f"{'':12}{'seconds':>10}{'rows/s':>14}{'peak RSS MB':>14}")
        for name in ("baseline", "level4"):
            print(f"{name:12}{med[name]['seconds']:10.2f}{med[name]['rows_per_s']:14,.0f}"
                  f"{med[name]['peak_rss_mb']:14,.0f}")
        print(f"level 4 / baseline rows/s: {ratios['rows_per_s']:.2f}x (target >= "
              f"{TARGET_SPEEDUP:g}x: {'met' if summary['target_met'] else 'NOT met'}); "
              f"peak RSS baseline / level 4: {ratios['peak_rss_baseline_over_level4']:.2f}x; "
              f"imports alone {floor['peak_rss_mb']:.0f} MB")
        e2e = end_to_end(workdir, ours_model, trips, args.month) if args.end_to_end else None
        results = {
            **summary, "samples": samples, "imports_only_peak_rss_mb": floor["peak_rss_mb"],
            "output_check": check, "end_to_end": e2e, "level4_breakdown": breakdown,
            "conditions": {
                "rows": args.rows, "repeats": args.repeats,
                "data": f"synthetic {args.month} ({args.rows} trips), model fitted on "
                        f"synthetic {args.train_month}",
                "timed": "the scoring call inside a fresh child process (imports and, for "
                         "level 4, the model load outside the clock; the baseline's pickle "
                         "load inside)",
                "cpus": os.cpu_count(), "load_average_before": load_before,
                "load_average_after": load_after,
                "load_average_1min_during": [min(loads), statistics.median(loads), max(loads)],
                "python": platform.python_version(), "machine": platform.machine(),
                "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            },
        }
        from benchmarks.common import write_results

        print(f"results: {write_results('level4_batch', results)}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
