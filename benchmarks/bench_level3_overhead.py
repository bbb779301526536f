"""What the level-3 pipeline (Prefect flow + MLflow tracking + registry) costs over level 2.

    python -m benchmarks.bench_level3_overhead [--model linear] [--repeats 3] [--no-cli]

Both sides train the same model on the same data: one real month through a local mirror of
``../shared/data/tlc`` when it exists (2021-01 -> 2021-02), else a synthetic month.

- level 2: ``level2_devops.training.train_and_save`` (load, prepare, fit, evaluate, save file);
- level 3 cold: the flow with ``--models MODEL --trials 1`` and an empty prepared-data cache
  (load, validate, prepare, fit, evaluate, nested MLflow runs, model logged, version registered);
- level 3 warm: the same with the prepared-data cache filled (a re-run with other parameters).

Both run in this process against one long-lived Prefect server (started before timing). With
``--cli`` (default) the whole command is also timed in fresh processes, with and without
PREFECT_API_URL: the second pays for Prefect's temporary server. Ratios are of medians.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import median_seconds, write_results

REPO = Path(__file__).resolve().parent.parent
TLC_DIR = Path(os.environ.get("TLC_TEST_DATA", REPO.parent / "shared" / "data" / "tlc"))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def start_mirror(folder: Path) -> http.server.ThreadingHTTPServer:
    """A local HTTP mirror of the real TLC files."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def cli_seconds(args: list[str], env: dict[str, str], repeats: int) -> list[float]:
    """Wall time of ``mlops-levels ARGS`` in a fresh process, ``repeats`` times."""
    exe = str(Path(sys.executable).with_name("mlops-levels"))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([exe, *args], env=env, capture_output=True, text=True)
        samples.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
    return samples


def main() -> None:  # noqa: PLR0915 - a script, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="linear")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cli", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-level3-"))
    real = (TLC_DIR / "green_tripdata_2021-01.parquet").exists()
    mirror = start_mirror(TLC_DIR) if real else None
    base_url = f"http://127.0.0.1:{mirror.server_address[1]}" if mirror else "http://unused"
    source = "tlc" if real else "synthetic"
    os.environ.update({"PREFECT_HOME": str(work / "prefect-client"),
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                       "MLFLOW_DISABLE_TELEMETRY": "true",
                       "PREFECT_LOGGING_LEVEL": "WARNING"})
    from level3_training.prefect_server import start_server

    server = start_server(work / "prefect-server")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        from level2_devops.training import TrainConfig as Level2Config
        from level2_devops.training import train_and_save
        from level3_training.pipeline import TrainConfig, run_training
        from taxi_common.data import load_trips
        from taxi_common.settings import Settings

        settings = Settings(workbook_home=work / "workbook", tlc_base_url=base_url)
        for month in ("2021-01", "2021-02"):  # fill the raw-file cache: no download is timed
            load_trips(month, settings=settings, source=source)
        level2 = Level2Config(train_month="2021-01", val_month="2021-02", source=source,
                              model=args.model)
        level3 = TrainConfig(("2021-01",), "2021-02", source=source, models=(args.model,),
                             trials=1)
        prepared_cache = settings.workbook_home / "cache" / "prepared"

        def plain() -> None:
            train_and_save(level2, settings=settings)

        def pipeline_cold() -> None:
            shutil.rmtree(prepared_cache, ignore_errors=True)
            run_training(level3, settings)

        def pipeline_warm() -> None:
            summary = run_training(level3, settings)
            assert all(summary["data"]["cache_hits"].values())

        run_training(level3, settings)  # warm-up: imports, database tables, first flow
        plain()
        samples: dict[str, list[float]] = {"level2": [], "level3_cold": [], "level3_warm": []}
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits all alike
            for name, fn in (("level2", plain), ("level3_cold", pipeline_cold),
                             ("level3_warm", pipeline_warm)):
                samples[name].append(median_seconds(fn, 1)[0])
        medians = {k: statistics.median(v) for k, v in samples.items()}
        results: dict[str, Any] = {
            "data": f"{source} green 2021-01 -> 2021-02 (full months)" if real
            else f"{source} 2021-01 -> 2021-02", "model": args.model, "repeats": args.repeats,
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "seconds": {k: round(v, 3) for k, v in medians.items()},
            "samples": {k: [round(s, 3) for s in v] for k, v in samples.items()},
            "ratio_level3_cold_over_level2": round(medians["level3_cold"] / medians["level2"], 2),
            "ratio_level3_warm_over_level2": round(medians["level3_warm"] / medians["level2"], 2),
            "target": "level3 cold / level2 < 2x on one real month",
        }
        if args.cli:
            env = {**os.environ, "WORKBOOK_HOME": str(work / "cli-home"),
                   "TLC_BASE_URL": base_url}
            env.pop("PREFECT_LOGGING_LEVEL")
            cli_args = ["level3", "train", "--train-months", "2021-01", "--val-month",
                        "2021-02", "--source", source, "--models", args.model, "--trials", "1"]
            with_server = cli_seconds(cli_args, env, args.repeats)
            env_tmp = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
            env_tmp["PREFECT_HOME"] = str(work / "prefect-temporary")
            temporary = cli_seconds(cli_args, env_tmp, args.repeats)
            results["cli_seconds"] = {
                "with_running_server": round(statistics.median(with_server), 3),
                "temporary_server_per_process": round(statistics.median(temporary), 3)}
            results["cli_samples"] = {"with_running_server": [round(s, 3) for s in with_server],
                                      "temporary_server_per_process":
                                          [round(s, 3) for s in temporary]}
    finally:
        server.stop()
        if mirror:
            mirror.shutdown()
            mirror.server_close()
        shutil.rmtree(work, ignore_errors=True)

    name = "level3_overhead" if args.model == "linear" else f"level3_overhead_{args.model}"
    path = write_results(name, results)
    print(f"data: {results['data']}; model {args.model}; medians of {args.repeats} runs")
    print(f"{'variant':<44}{'seconds':>9}{'x level 2':>11}")
    base = medians["level2"]
    for name, label in (("level2", "level 2 train_and_save"),
                        ("level3_cold", "level 3 flow, prepared-data cache empty"),
                        ("level3_warm", "level 3 flow, prepared-data cache filled")):
        print(f"{label:<44}{medians[name]:>9.2f}{medians[name] / base:>11.2f}")
    for name, value in results.get("cli_seconds", {}).items():
        print(f"{'CLI, ' + name.replace('_', ' '):<44}{value:>9.2f}{value / base:>11.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
