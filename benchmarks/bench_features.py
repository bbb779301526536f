"""TripFeaturizer against the classic DictVectorizer recipe, side by side, in one run.

    python -m benchmarks.bench_features [--rows 1000000] [--repeats 5]

Both sides start from the same prepared DataFrame and end with the same CSR matrix (checked).
The recipe's time includes building the PU_DO strings and the per-row dicts, because that is the
work the recipe makes you do.
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import pandas as pd
from sklearn.feature_extraction import DictVectorizer

from benchmarks.common import median_seconds, peak_memory_mb, write_results
from taxi_common.features import TripFeaturizer


def make_trips(rows: int, seed: int = 0) -> pd.DataFrame:
    """Prepared-looking trips: categorical zone IDs with a skewed popularity, distances."""
    rng = np.random.default_rng(seed)
    zone_weights = rng.pareto(1.2, 265) + 0.01
    zone_weights /= zone_weights.sum()
    pu = rng.choice(np.arange(1, 266), rows, p=zone_weights)
    do = rng.choice(np.arange(1, 266), rows, p=zone_weights)
    return pd.DataFrame({
        "PULocationID": pd.Categorical(pu),
        "DOLocationID": pd.Categorical(do),
        "trip_distance": rng.exponential(2.8, rows).round(2),
    })


def dictvectorizer_recipe(df: pd.DataFrame):
    """The course notebook's featurization."""
    frame = pd.DataFrame({
        "PU_DO": df["PULocationID"].astype(str) + "_" + df["DOLocationID"].astype(str),
        "trip_distance": df["trip_distance"],
    })
    return DictVectorizer().fit_transform(frame.to_dict(orient="records"))


def featurizer_recipe(df: pd.DataFrame):
    """The project's featurization."""
    return TripFeaturizer().fit_transform(df)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    trips = make_trips(args.rows)
    ours, theirs = featurizer_recipe(trips), dictvectorizer_recipe(trips)
    assert (ours != theirs).nnz == 0 and ours.shape == theirs.shape, "matrices differ"
    del ours, theirs

    # Alternate the two sides so that machine noise hits both alike.
    times: dict[str, list[float]] = {"dictvectorizer": [], "trip_featurizer": []}
    for _ in range(args.repeats):
        times["dictvectorizer"] += median_seconds(lambda: dictvectorizer_recipe(trips), 1)[1]
        times["trip_featurizer"] += median_seconds(lambda: featurizer_recipe(trips), 1)[1]
    medians = {k: float(np.median(v)) for k, v in times.items()}
    memory = {"dictvectorizer": peak_memory_mb(lambda: dictvectorizer_recipe(trips)),
              "trip_featurizer": peak_memory_mb(lambda: featurizer_recipe(trips))}
    results = {
        "rows": args.rows, "repeats": args.repeats, "python": platform.python_version(),
        "median_seconds": medians, "samples_seconds": times, "peak_memory_mb": memory,
        "speedup": medians["dictvectorizer"] / medians["trip_featurizer"],
        "memory_ratio": memory["dictvectorizer"] / memory["trip_featurizer"],
    }
    path = write_results("features", results)
    print(f"featurize {args.rows:,} rows, median of {args.repeats} runs each (alternating)")
    print(f"{'recipe':<18}{'median s':>10}{'peak MB':>10}")
    for name in medians:
        print(f"{name:<18}{medians[name]:>10.3f}{memory[name]:>10.1f}")
    print(f"speed-up {results['speedup']:.1f}x, peak memory {results['memory_ratio']:.1f}x lower"
          f"  -> {path}")


if __name__ == "__main__":
    main()
