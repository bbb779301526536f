"""Level 2's service against the classic DictVectorizer service, both under gunicorn, in one run.

    python -m benchmarks.bench_level2_service [--seconds 5] [--repeats 3] [--source synthetic]

Both serve a LinearRegression fitted on the same month (the baseline through DictVectorizer dicts,
ours through TripFeaturizer: the same matrix, so the same model; a check compares their answers).
Both run under gunicorn with the same settings (2 sync workers, --preload) on 127.0.0.1, and the
same load generator hits each in turn: wrk, 2 threads, 16 connections, a Lua script cycling
through real ride bodies. Single rides: requests/s and p50/p99 latency; batches of 1,000 rides:
rides/s. Each measurement is repeated, alternating the two services, and medians are reported.
Our service is started through the real command, ``mlops-levels level2 serve``.

A third server, the "floor", is a bare WSGI app under the same gunicorn that reads the body and
answers a constant of the right size: no Flask, no model. It shows how much of the machine the
HTTP and gunicorn work alone takes, i.e. the highest ratio any Python service could reach here.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import write_results
from taxi_common.local_servers import (
    ServerStartError,
    free_port,
    stop_process_group,
    wait_until_healthy,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WRK = shutil.which("wrk")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def fit_models(train: pd.DataFrame, workdir: Path) -> tuple[Path, Path]:
    """Our versioned model file and the baseline's pickled (DictVectorizer, model)."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LinearRegression

    from level2_devops.model_store import save_model
    from level2_devops.training import fit_model

    ours = save_model(fit_model("linear", train), {"model": "linear"}, workdir / "models")
    dicts = pd.DataFrame({
        "PU_DO": train["PULocationID"].astype(str) + "_" + train["DOLocationID"].astype(str),
        "trip_distance": train["trip_distance"]}).to_dict(orient="records")
    dv = DictVectorizer()
    model = LinearRegression().fit(dv.fit_transform(dicts), train["duration"].to_numpy())
    baseline = workdir / "baseline.bin"
    baseline.write_bytes(pickle.dumps((dv, model)))
    return ours, baseline


def ride_bodies(df: pd.DataFrame, count: int, size: int, seed: int) -> list[str]:
    """``count`` JSON bodies of ``size`` real rides each (one object when ``size`` is 1)."""
    rng = np.random.default_rng(seed)
    rows = df.iloc[rng.integers(0, len(df), count * size)]
    rides = [{"PULocationID": int(pu), "DOLocationID": int(do), "trip_distance": float(d)}
             for pu, do, d in zip(rows["PULocationID"], rows["DOLocationID"],
                                  rows["trip_distance"], strict=True)]
    if size == 1:
        return [json.dumps(r) for r in rides]
    return [json.dumps(rides[i:i + size]) for i in range(0, len(rides), size)]


def write_lua(path: Path, bodies: list[str], endpoint: str = "/predict") -> Path:
    """A wrk script that POSTs the bodies in turn to ``endpoint``."""
    quoted = ",\n".join(f"[==[{b}]==]" for b in bodies)
    path.write_text(
        f"local bodies = {{\n{quoted}\n}}\nlocal i = 0\n"
        "local headers = {['Content-Type'] = 'application/json'}\n"
        "request = function()\n  i = i % #bodies + 1\n"
        f"  return wrk.format('POST', '{endpoint}', headers, bodies[i])\nend\n")
    return path


def post(url: str, body: str, timeout: float = 5.0) -> Any:
    """POST ``body`` as JSON and return the decoded answer."""
    req = urllib.request.Request(url, data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return json.loads(response.read())


def _answers(url: str, body: str) -> bool:
    """True when a POST of ``body`` to ``url`` gets an answer."""
    try:
        post(url, body, timeout=1.0)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
    return True


def start(cmd: list[str], env: dict[str, str], url: str, probe: str,
          log: Path, timeout: float = 60.0) -> subprocess.Popen:
    """Start a server in its own process group and wait (up to ``timeout`` s) until it answers
    ``probe``."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_until_healthy(proc, lambda: _answers(url, probe), what=Path(cmd[-1]).name,
                           timeout=timeout, log_path=log)
    except ServerStartError as exc:
        raise SystemExit(str(exc)) from None
    return proc


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * _UNITS[unit]


def run_wrk(url: str, script: Path, seconds: int, threads: int, connections: int,
            ) -> dict[str, float]:
    """One wrk run: requests/s, responses counted, p50 and p99 latency in ms, error counts."""
    out = subprocess.run([WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True,
                         timeout=seconds + 60).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, flags=re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)$", out, flags=re.M)
    return {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "p50_ms": _ms(latency["50"]), "p99_ms": _ms(latency["99"]),
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def check_same_answers(ours: str, baseline: str, batch: str) -> float:
    """Largest absolute difference, in minutes, between the two services on one batch."""
    a = np.array([p["duration"] for p in post(ours, batch)])
    b = np.array([p["duration"] for p in post(baseline, batch)])
    return float(np.max(np.abs(a - b)))


def _per_call_us(fn: Any, number: int) -> float:
    """Median time of one call of ``fn``, in microseconds (5 rounds of ``number`` calls)."""
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(rounds)


def _call_wsgi(app: Any, body: bytes) -> bytes:
    """One POST /predict straight through the app's WSGI callable (no HTTP, no test client)."""
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "SERVER_NAME": "127.0.0.1",
               "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
               "HTTP_HOST": "127.0.0.1", "CONTENT_TYPE": "application/json",
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
               "wsgi.errors": sys.stderr}
    return b"".join(app.wsgi_app(environ, lambda status, headers, exc_info=None: None))


def profile_request_path(ours_model: Path, baseline_model: Path, single: str, batch: str,
                         workdir: Path) -> dict[str, dict[str, float]]:
    """In-process cost, in µs, of each step of one request on both sides (no HTTP, no Flask
    dispatch except in the "whole request" rows: the app's WSGI callable with a ready environ, with
    its fast path for POST /predict and with Flask alone).
    Prometheus runs in multiprocess mode (memory-mapped files), as under gunicorn."""

    from level2_devops.service.server import multiprocess_dir
    from taxi_common.settings import Settings

    with multiprocess_dir(Settings(workbook_home=workdir / "profile")):
        return _profile_in_process(ours_model, baseline_model, single, batch)


def _profile_in_process(ours_model: Path, baseline_model: Path, single: str,
                        batch: str) -> dict[str, dict[str, float]]:
    """The body of :func:`profile_request_path`, with Prometheus in multiprocess mode."""
    from flask import Flask, jsonify

    from level2_devops.app import create_app, predictions_body
    from level2_devops.service.metrics import ServiceMetrics
    from level2_devops.service.model_source import ModelFileSource
    from level2_devops.service.rides import RideParser

    dv, model = pickle.loads(baseline_model.read_bytes())
    source = ModelFileSource(ours_model)
    loaded, parser, metrics = source.load(), RideParser(), ServiceMetrics()
    flask_app = Flask("baseline")
    app = create_app(source)
    flask_only = create_app(source, {"PREDICT_FAST_PATH": False})
    out: dict[str, dict[str, float]] = {}
    for label, text in (("single", single), ("batch", batch)):
        data = text.encode()
        rides, one = parser.parse(data)
        minutes = loaded.predict(rides)
        raw = json.loads(data)
        dicts = [raw] if isinstance(raw, dict) else raw
        features = [{"PU_DO": f"{r['PULocationID']}_{r['DOLocationID']}",
                     "trip_distance": r["trip_distance"]} for r in dicts]
        preds = model.predict(dv.transform(features))
        n = 2000 if one else 100

        def jsonify_baseline(preds=preds, one=one):
            with flask_app.app_context():
                if one:
                    return jsonify({"duration": float(preds[0]), "model_version": "baseline"})
                return jsonify([{"duration": float(p), "model_version": "baseline"}
                                for p in preds])

        out[label] = {
            "ours_parse_and_validate": _per_call_us(lambda d=data: parser.parse(d), n),
            "ours_predict": _per_call_us(lambda r=rides: loaded.predict(r), n),
            "ours_prometheus": _per_call_us(
                lambda m=minutes: (metrics.observe_predictions("1", "champion", m),
                                   metrics.observe_request("/predict", "POST", 200, 0.001)), n),
            "ours_encode": _per_call_us(
                lambda m=minutes, o=one: predictions_body(m, {"model_version": "1"}, o), n),
            "ours_whole_request_wsgi": _per_call_us(lambda d=data: _call_wsgi(app, d), n),
            "ours_whole_request_through_flask": _per_call_us(
                lambda d=data: _call_wsgi(flask_only, d), n),
            "baseline_json_parse": _per_call_us(lambda d=data: json.loads(d), n),
            "baseline_dicts_transform_predict": _per_call_us(
                lambda f=features: model.predict(dv.transform(f)), n),
            "baseline_jsonify": _per_call_us(jsonify_baseline, n),
        }
    return out


def summarise(samples: dict[str, dict[str, list[dict[str, float]]]],
              batch_size: int) -> dict[str, Any]:
    """Medians per service and load, and our/baseline ratios."""
    med: dict[str, dict[str, float]] = {}
    for service, loads in samples.items():
        single, batch = loads["single"], loads["batch"]
        med[service] = {
            "single_requests_per_s": statistics.median(s["requests_per_s"] for s in single),
            "single_p50_ms": statistics.median(s["p50_ms"] for s in single),
            "single_p99_ms": statistics.median(s["p99_ms"] for s in single),
            "batch_rides_per_s": statistics.median(s["requests_per_s"] for s in batch)
            * batch_size,
            "batch_p99_ms": statistics.median(s["p99_ms"] for s in batch),
        }
    ours, base = med["level2_service"], med["baseline"]
    ratios = {
        "single_throughput": ours["single_requests_per_s"] / base["single_requests_per_s"],
        "single_p99_ours_over_baseline": ours["single_p99_ms"] / base["single_p99_ms"],
        "batch_throughput": ours["batch_rides_per_s"] / base["batch_rides_per_s"],
        "batch_p99_ours_over_baseline": ours["batch_p99_ms"] / base["batch_p99_ms"],
    }
    if "floor" in med:  # how much of the HTTP + gunicorn ceiling each service reaches
        floor = med["floor"]
        ratios["floor_over_baseline_single"] = (floor["single_requests_per_s"]
                                                / base["single_requests_per_s"])
        ratios["floor_over_baseline_batch"] = (floor["batch_rides_per_s"]
                                               / base["batch_rides_per_s"])
        ratios["ours_share_of_floor_single"] = (ours["single_requests_per_s"]
                                                / floor["single_requests_per_s"])
        ratios["ours_share_of_floor_batch"] = (ours["batch_rides_per_s"]
                                               / floor["batch_rides_per_s"])
    return {"medians": med, "ratios": ratios}


def print_table(summary: dict[str, Any]) -> None:
    """The medians side by side and the ratios."""
    med, ratios = summary["medians"], summary["ratios"]
    rows = [("single: requests/s", "single_requests_per_s", "{:,.0f}"),
            ("single: p50 ms", "single_p50_ms", "{:.2f}"),
            ("single: p99 ms", "single_p99_ms", "{:.2f}"),
            ("batch of 1,000: rides/s", "batch_rides_per_s", "{:,.0f}"),
            ("batch of 1,000: p99 ms", "batch_p99_ms", "{:.1f}")]
    names = [n for n in ("baseline", "level2_service", "floor") if n in med]
    titles = {"baseline": "baseline", "level2_service": "level 2", "floor": "floor*"}
    print(f"{'':26}" + "".join(f"{titles[n]:>14}" for n in names))
    for label, key, fmt in rows:
        print(f"{label:26}" + "".join(f"{fmt.format(med[n][key]):>14}" for n in names))
    print("* floor: a bare WSGI app that reads the body and answers a constant of the same size")
    print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of one wrk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--source", default="synthetic", help="synthetic or tlc")
    parser.add_argument("--month", default="2021-01")
    args = parser.parse_args()
    if WRK is None:
        print("wrk is not installed (apt-get install wrk): this benchmark needs it; skipped.")
        return

    from level2_devops.training import load_prepared_month
    from taxi_common.settings import Settings

    workdir = Path(tempfile.mkdtemp(prefix="bench-level2-"))
    settings = Settings.from_env()
    try:
        trips = load_prepared_month(args.month, settings=settings, source=args.source)
        ours_model, baseline_model = fit_models(trips, workdir)
        single = write_lua(workdir / "single.lua", ride_bodies(trips, 200, 1, seed=1))
        batches = ride_bodies(trips, 10, args.batch_size, seed=2)
        batch = write_lua(workdir / "batch.lua", batches)
        probe = ride_bodies(trips, 1, 1, seed=3)[0]
        ports = {"level2_service": free_port(), "baseline": free_port(), "floor": free_port()}
        urls = {k: f"http://127.0.0.1:{p}/predict" for k, p in ports.items()}
        env = {**os.environ, "WORKBOOK_HOME": str(workdir / "home"),
               "BASELINE_MODEL": str(baseline_model)}
        commands = {
            "level2_service": [str(BIN / "mlops-levels"), "level2", "serve", "--model",
                               str(ours_model), "--port", str(ports["level2_service"]),
                               "--workers", str(args.workers)],
            "baseline": [str(BIN / "gunicorn"), "--no-control-socket", "--preload",
                         "-w", str(args.workers), "-k", "sync",
                         "-b", f"127.0.0.1:{ports['baseline']}",
                         "benchmarks.level2_baseline_app:app"],
            "floor": [str(BIN / "gunicorn"), "--no-control-socket", "--preload",
                      "-w", str(args.workers), "-k", "sync", "-b", f"127.0.0.1:{ports['floor']}",
                      "benchmarks.level2_baseline_app:floor"],
        }
        servers = {}
        try:
            for name, cmd in commands.items():
                servers[name] = start(cmd, env, urls[name], probe, workdir / f"{name}.log")
            max_diff = check_same_answers(urls["level2_service"], urls["baseline"], batches[0])
            print(f"both services agree on a batch within {max_diff:.2e} minutes")
            path_costs = profile_request_path(ours_model, baseline_model, probe, batches[0],
                                              workdir)
            for load, costs in path_costs.items():
                print(f"request path, {load} (µs): "
                      + ", ".join(f"{k} {v:.0f}" for k, v in costs.items()))
            samples: dict[str, dict[str, list]] = {n: {"single": [], "batch": []}
                                                   for n in commands}
            load_before = os.getloadavg()
            for name in commands:  # warm-up, not recorded
                run_wrk(urls[name], single, 1, 2, 16)
            names = list(commands)
            for repeat in range(args.repeats):
                shift = repeat % len(names)
                order = names[shift:] + names[:shift]  # rotate
                for load, script in (("single", single), ("batch", batch)):
                    for name in order:
                        result = run_wrk(urls[name], script, args.seconds, 2, 16)
                        samples[name][load].append(result)
                        print(f"  {name:15} {load:6} {result['requests_per_s']:9.1f} req/s  "
                              f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms",
                              flush=True)
            load_after = os.getloadavg()
        finally:
            for proc in servers.values():
                stop_process_group(proc.pid)
        summary = summarise(samples, args.batch_size)
        print_table(summary)
        errors = {n: sum(s["non_2xx"] for loads in v.values() for s in loads)
                  for n, v in samples.items()}
        results = {
            **summary, "samples": samples, "non_2xx_responses": errors,
            "request_path_us": path_costs,
            "max_abs_difference_minutes": max_diff,
            "conditions": {
                "load_generator": "wrk -t2 -c16, Lua script cycling real ride bodies",
                "seconds_per_run": args.seconds, "repeats": args.repeats,
                "workers": args.workers, "worker_class": "sync", "batch_size": args.batch_size,
                "data": f"{args.source} {args.month}, {len(trips)} prepared trips",
                "cpus": os.cpu_count(), "load_average_before": load_before,
                "load_average_after": load_after, "python": platform.python_version(),
                "note": "server, wrk and any other work share the same cores",
            },
        }
        print(f"results: {write_results('level2_service', results)}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
