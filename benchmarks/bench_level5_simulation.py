"""`python -m benchmarks.bench_level5_simulation`: the level-5 simulation a class runs live.

``mlops-levels level5 simulate --scenario congestion --days 90`` (the shipped policy, about
2,000 trips a day), timed end to end in a fresh folder and split by phase (serving, actuals,
monitoring, the loop — retraining, registration, the promotion rule — and the bootstrap), with
the recovery figures of the run. The goal: under 5 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_results


def main() -> None:
    """Run the simulation once, print where the time went, write the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--rows-per-day", type=int, default=2000)
    parser.add_argument("--scenario", default="congestion")
    args = parser.parse_args()

    from level5_automation.policy import load_policy
    from level5_automation.simulation import SimulationConfig, simulate

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    config = SimulationConfig(scenario=args.scenario, start=dt.date(2021, 1, 1), days=args.days,
                              rows_per_day=args.rows_per_day)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-level5-") as folder:
        started = time.perf_counter()
        cpu = time.process_time()
        result = simulate(config, load_policy(), Path(folder) / "simulation")
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    counts = {kind: len(result.events_of(kind)) for kind in
              ("alert", "retrain", "promote", "reject", "rollback", "error")}
    phases = {k: round(v, 1) for k, v in sorted(result.timings.items(), key=lambda kv: -kv[1])}
    print(f"{args.days} days of {args.scenario}, ~{args.rows_per_day} trips a day: "
          f"{wall:.0f} s wall, {cpu:.0f} s CPU (load average before: {load[0]:.1f})")
    for phase, seconds in phases.items():
        print(f"  {phase:<11} {seconds:7.1f} s")
    print(f"events: {counts}")
    print(f"recovery: {result.recovery()}")
    path = write_results("level5_simulation", {
        "days": args.days, "rows_per_day": args.rows_per_day, "scenario": args.scenario,
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_average_before": load[0],
        "phases_s": phases, "events": counts, "recovery": result.recovery(),
        "rides": sum(d.rows for d in result.days)})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
