"""What the crash journal costs: `level4 serve` with the journal on and with `--no-journal`.

    python -m benchmarks.bench_level4_journal [--seconds 5] [--repeats 5]

One LinearRegression (the level-2 recipe on a synthetic month) is version 1 (``@champion``) of
``taxi-duration`` in a SQLite MLflow store under a temporary WORKBOOK_HOME. Two servers, the
same command but for ``--no-journal``, each with 2 gunicorn workers on 127.0.0.1 and the
prediction log on (SQLite, WAL), are loaded in turn by wrk (2 threads, 16 connections, a Lua
script cycling 1,000 single-ride bodies with ride ids), the order rotated every round; medians
of requests/s, p50/p99 and the server's CPU time per request (its process tree, from /proc),
with each round's paired ratios. It also times the request-path part alone, in process: a
record's journal line and its append (a buffered write and a flush), per record.

After the runs both servers stop gracefully; the journalled one must leave no journal behind
(every segment committed), and both logs must hold one row per 2xx response.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_level2_service import BIN, WRK, fit_models, run_wrk, start, write_lua
from benchmarks.bench_level4_service import (
    create_log_tables,
    register_pipeline,
    served_2xx,
    single_rides,
    tree_cpu_seconds,
)
from benchmarks.common import write_results
from taxi_common.local_servers import free_port, stop_process_group
from taxi_common.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
THREADS, CONNECTIONS = 2, 16
NAMES = ("journal", "no_journal")


def journal_append_us(directory: Path, number: int = 20_000) -> dict[str, float]:
    """In process, per single-ride record: making its journal line, and appending it."""
    from level2_devops.service.rides import RideBatch
    from level2_devops.service.sink import PredictionRecord
    from level4_deployment.journal import CrashJournal, record_line

    rides = RideBatch(np.array([74]), np.array([75]), np.array([2.5]), ["ride-1"])
    record = PredictionRecord("0" * 32, time.time(), rides, "champion", "1", np.array([12.5]))
    journal = CrashJournal(directory).start()
    line = record_line(record)
    try:
        encode = min(timeit.repeat(lambda: record_line(record), number=number, repeat=5))
        append = min(timeit.repeat(lambda: journal.append(line), number=number, repeat=5))
    finally:
        journal.close()
    return {"line_us": encode / number * 1e6, "append_us": append / number * 1e6,
            "line_bytes": len(line)}


def summarise(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians per server and the medians of the paired (same round) ratios."""
    keys = ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request")
    medians = {name: {k: statistics.median(s[k] for s in runs) for k in keys}
               for name, runs in samples.items()}
    paired = {
        "requests_per_s_journal_over_no_journal": statistics.median(
            a["requests_per_s"] / b["requests_per_s"]
            for a, b in zip(samples["journal"], samples["no_journal"], strict=True)),
        "cpu_per_request_journal_over_no_journal": statistics.median(
            a["server_cpu_us_per_request"] / b["server_cpu_us_per_request"]
            for a, b in zip(samples["journal"], samples["no_journal"], strict=True)),
    }
    return {"medians": medians, "paired_ratios": paired}


def _commands(ports: dict[str, int], workers: int) -> dict[str, list[str]]:
    base = [str(BIN / "mlops-levels"), "level4", "serve", "--workers", str(workers)]
    return {"journal": [*base, "--port", str(ports["journal"])],
            "no_journal": [*base, "--no-journal", "--port", str(ports["no_journal"])]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of one wrk run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args()
    if WRK is None:
        print("wrk is not installed (apt-get install wrk): this benchmark needs it; skipped.")
        return
    from level2_devops.model_store import load_model
    from level2_devops.training import load_prepared_month
    from level4_deployment.journal import journal_dir
    from level4_deployment.store import engine_for, prediction_summary

    workdir = Path(tempfile.mkdtemp(prefix="bench-journal-"))
    homes = {name: workdir / name for name in NAMES}  # one WORKBOOK_HOME (log, journal) each
    try:
        in_process = journal_append_us(workdir / "micro")
        print(f"in process, per record: line {in_process['line_us']:.2f} µs, append "
              f"{in_process['append_us']:.2f} µs ({in_process['line_bytes']} bytes)", flush=True)
        registry = Settings(workbook_home=workdir / "registry")
        trips = load_prepared_month("2021-01", settings=registry, source="synthetic")
        ours_file, _ = fit_models(trips, workdir)
        champion, _ = load_model(ours_file)
        version = register_pipeline(registry, champion, trips, alias="champion",
                                    description="journal benchmark champion")
        for home in homes.values():
            create_log_tables(Settings(workbook_home=home))
        rides = single_rides(trips, 1000, seed=1)
        script = write_lua(workdir / "single.lua", [json.dumps(r) for r in rides])
        ports: dict[str, int] = {}
        while len(set(ports.values())) < len(NAMES):
            ports = {n: free_port() for n in NAMES}
        urls = {n: f"http://127.0.0.1:{p}/predict" for n, p in ports.items()}
        servers: dict[str, Any] = {}
        samples: dict[str, list[dict[str, Any]]] = {n: [] for n in NAMES}
        loads = []
        try:
            for name, cmd in _commands(ports, args.workers).items():
                env = {**os.environ, "PYTHONPATH": str(ROOT),
                       "WORKBOOK_HOME": str(homes[name]),
                       "MLFLOW_TRACKING_URI": registry.tracking_uri,
                       "MLFLOW_DISABLE_TELEMETRY": "true"}
                env.pop("DATABASE_URL", None)
                servers[name] = start(cmd, env, urls[name], json.dumps(rides[0]),
                                      workdir / f"{name}.log", timeout=180)
            for name in NAMES:  # warm-up, not recorded
                run_wrk(urls[name], script, 1, THREADS, CONNECTIONS)
            for repeat in range(args.repeats):
                order = NAMES if repeat % 2 == 0 else NAMES[::-1]
                for name in order:
                    cpu_before = tree_cpu_seconds(servers[name].pid)
                    result = run_wrk(urls[name], script, args.seconds, THREADS, CONNECTIONS)
                    result["server_cpu_us_per_request"] = (
                        (tree_cpu_seconds(servers[name].pid) - cpu_before)
                        / max(result["requests"], 1) * 1e6)
                    loads.append(os.getloadavg()[0])
                    samples[name].append(result)
                    print(f"  {name:10} {result['requests_per_s']:9.1f} req/s  p50 "
                          f"{result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  server CPU "
                          f"{result['server_cpu_us_per_request']:.0f} µs/request", flush=True)
            served = {n: served_2xx(urls[n].replace("/predict", "/metrics")) for n in NAMES}
        finally:
            for proc in servers.values():
                proc.terminate()  # SIGTERM: graceful, each worker commits its queue
            for proc in servers.values():
                try:
                    proc.wait(timeout=60)
                except Exception:  # noqa: BLE001 - a server that hangs is stopped by group
                    stop_process_group(proc.pid)
        logged = {}
        for name, home in homes.items():
            engine = engine_for(Settings(workbook_home=home))
            logged[name] = prediction_summary(engine)["total"]
            engine.dispose()
        left = sorted(p.name for p in journal_dir(Settings(workbook_home=homes["journal"]))
                      .glob("*.jsonl"))
        checks = {"logged_rows": logged, "served_2xx": served, "journal_files_left": left,
                  "ok": logged == served and not left}
        summary = summarise(samples)
        print(json.dumps({**summary, "checks": checks, "in_process": in_process}, indent=2))
        results = {**summary, "samples": samples, "in_process_per_record": in_process,
                   "checks": checks, "registered_version": version,
                   "conditions": {
                       "load_generator": f"wrk -t{THREADS} -c{CONNECTIONS}, Lua script cycling "
                                         "1,000 single-ride bodies (with ride_id)",
                       "seconds_per_run": args.seconds, "repeats": args.repeats,
                       "workers": args.workers, "prediction_log": "SQLite (WAL), both",
                       "cpus": os.cpu_count(),
                       "load_average_1min_during": [min(loads), statistics.median(loads),
                                                    max(loads)],
                       "python": platform.python_version(), "machine": platform.machine(),
                       "note": "servers, wrk and other work share the same cores"}}
        print(f"results: {write_results('level4_service_journal', results)}")
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
