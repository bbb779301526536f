"""Measure the real green TLC months in a folder and write the synthetic generator's profile.

Usage::

    .venv/bin/python scripts/calibrate_synthetic.py [FOLDER] [--out taxi_common/profile]

``FOLDER`` (default ``../shared/data/tlc``) holds ``green_tripdata_YYYY-MM.parquet`` files and
``taxi_zone_lookup.csv``. The profile holds aggregates only (shares, medians, quantiles, pair
counts): no trip of the real files can be read back from it. It is written as
``green_2021.json`` next to a copy of the zone table, ``taxi_zones.csv``.

The real files hold two kinds of trips, and the profile keeps them apart as two *segments*:
``street`` (street-hail trips with every field filled) and ``dispatch`` (the 47% block, nearly all
vendor 2, where payment_type, passenger_count, RatecodeID, trip_type, store_and_fwd_flag and
congestion_surcharge are null together; longer trips spread over many more zone pairs).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from taxi_common.prepare import add_duration

BOROUGHS = ("Manhattan", "Brooklyn", "Queens", "Bronx", "Staten Island", "EWR", "Unknown")
N_ZONES = 266  # zone IDs 1..265; index 0 unused
MIN_PAIR_TRIPS = 10  # a zone pair is listed by name when it has this many trips over all months
QUANTILES = np.linspace(0.0, 1.0, 101)
SEGMENTS = ("street", "dispatch")


def load_months(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    """All green months in ``folder``, with duration, segment, hour and weekday columns."""
    files = sorted(folder.glob("green_tripdata_*.parquet"))
    if not files:
        raise SystemExit(f"no green_tripdata_*.parquet files in {folder}")
    frames = []
    for path in files:
        df = pd.read_parquet(path)
        df["month"] = path.stem.rsplit("_", 1)[-1]
        frames.append(df)
    df = add_duration(pd.concat(frames, ignore_index=True))
    df["segment"] = np.where(df.payment_type.isna(), "dispatch", "street")
    df["hour"] = df.lpep_pickup_datetime.dt.hour
    df["weekday"] = df.lpep_pickup_datetime.dt.weekday
    return df, [p.stem.rsplit("_", 1)[-1] for p in files]


def borough_index(zones: pd.DataFrame) -> np.ndarray:
    """Borough number (index in BOROUGHS) of every zone ID 0..265 (0 -> Unknown)."""
    out = np.full(N_ZONES, BOROUGHS.index("Unknown"), dtype=np.int64)
    for zone_id, borough in zip(zones.LocationID, zones.Borough, strict=True):
        out[int(zone_id)] = BOROUGHS.index(borough if borough in BOROUGHS else "Unknown")
    return out


def clean_trips(df: pd.DataFrame) -> pd.DataFrame:
    """Trips usable to measure distance and speed: 1-60 minutes, 0 < distance < 100 miles."""
    keep = df.duration.between(1, 60) & (df.trip_distance > 0) & (df.trip_distance < 100)
    out = df.loc[keep].copy()
    out["speed"] = out.trip_distance / (out.duration / 60)
    return out


def shares(series: pd.Series) -> dict[str, float]:
    """Value -> share (nulls excluded), rounded, keys as strings for JSON."""
    vc = series.dropna().value_counts(normalize=True)
    return {repr(float(k)): round(float(v), 5) for k, v in vc.items() if v >= 1e-4}


def quantiles(values: np.ndarray, digits: int = 4) -> list[float]:
    """The 101 percentiles of ``values``, rounded."""
    return [round(float(q), digits) for q in np.quantile(values, QUANTILES)]


def hour_factors(clean: pd.DataFrame) -> dict[str, list[float]]:
    """Per segment: median speed at each pickup hour over the segment's median speed."""
    out = {}
    for seg in SEGMENTS:
        g = clean[clean.segment == seg]
        by_hour = g.groupby("hour").speed.median().reindex(range(24))
        out[seg] = [round(float(v), 4) for v in (by_hour / g.speed.median()).fillna(1.0)]
    return out


def pair_table(df: pd.DataFrame, clean: pd.DataFrame, boro: np.ndarray,
               n_months: int) -> tuple[pd.DataFrame, dict[str, dict[str, list[float]]]]:
    """Zone pairs with MIN_PAIR_TRIPS trips or more: monthly counts per segment, median distance
    and median hour-adjusted speed; plus the tail geometry used for every other pair."""
    key = df.PULocationID * 1000 + df.DOLocationID
    counts = pd.crosstab(key, df.segment).reindex(columns=list(SEGMENTS), fill_value=0)
    counts = counts[counts.sum(axis=1) >= MIN_PAIR_TRIPS]
    ckey = clean.PULocationID * 1000 + clean.DOLocationID
    med = clean.groupby(ckey).agg(distance=("trip_distance", "median"),
                                  speed=("speed_adj", "median"), n=("speed", "size"))
    table = counts.join(med, how="left")
    table["pu"] = table.index // 1000
    table["do"] = table.index % 1000
    table = table.reset_index(drop=True)
    borough_info = tail_geometry(clean, table, boro)
    # Pairs with too few clean trips get the borough-pair values in the generator (NaN -> null).
    few = table.n.fillna(0) < 3
    table.loc[few, ["distance", "speed"]] = np.nan
    table[list(SEGMENTS)] = table[list(SEGMENTS)] / n_months
    return table, borough_info


def robust_sd(values: np.ndarray) -> float:
    """Standard deviation estimated from the interquartile range (insensitive to outliers)."""
    q1, q3 = np.quantile(values, [0.25, 0.75])
    return float((q3 - q1) / 1.349)


def tail_geometry(clean: pd.DataFrame, table: pd.DataFrame, boro: np.ndarray) -> dict[str, object]:
    """How trips between unlisted pairs look: borough-pair medians of distance and speed (from
    those trips), the spread of whole pairs around them (the tail's spread minus the within-pair
    spread), the rank correlation of a pair's distance and speed factors, and the median distance
    of a trip that starts and ends in the same zone, per borough."""
    nb = len(BOROUGHS)
    ckey = clean.PULocationID * 1000 + clean.DOLocationID
    listed = ckey.isin(set((table.pu * 1000 + table.do).tolist())).to_numpy()
    cb = clean.assign(bp=boro[clean.PULocationID] * nb + boro[clean.DOLocationID])
    tail = cb[~listed]
    all_bp = cb.groupby("bp").agg(distance=("trip_distance", "median"),
                                  speed=("speed_adj", "median"))
    tail_bp = tail.groupby("bp").agg(distance=("trip_distance", "median"),
                                     speed=("speed_adj", "median"), n=("speed", "size"))
    tail_bp = tail_bp[tail_bp.n >= 20]
    intra = cb[cb.PULocationID == cb.DOLocationID].groupby("bp").trip_distance.median()
    fallback_d, fallback_s = float(tail.trip_distance.median()), float(tail.speed_adj.median())
    out = {"distance": [], "speed": [], "intra_distance": []}
    for b in range(nb * nb):
        src = tail_bp if b in tail_bp.index else all_bp
        out["distance"].append(round(float(src.distance.get(b, fallback_d)), 3))
        out["speed"].append(round(float(src.speed.get(b, fallback_s)), 3))
        out["intra_distance"].append(round(float(intra.get(b, 1.0)), 3))
    bp_d = np.asarray(out["distance"])[tail.bp]
    bp_s = np.asarray(out["speed"])[tail.bp]
    log_d = np.log(tail.trip_distance.to_numpy() / bp_d)
    log_s = np.log(tail.speed_adj.to_numpy() / bp_s)
    within = within_pair_logs(clean, table)
    sd_d = np.sqrt(max(robust_sd(log_d) ** 2 - robust_sd(within[0]) ** 2, 0.01))
    sd_s = np.sqrt(max(robust_sd(log_s) ** 2 - robust_sd(within[1]) ** 2, 0.01))
    rho = float(np.corrcoef(pd.Series(log_d).rank(), pd.Series(log_s).rank())[0, 1])
    spread = {"distance_sigma": round(float(sd_d), 4), "speed_sigma": round(float(sd_s), 4),
              "rank_correlation": round(rho, 4)}
    return {"borough_pairs": out, "spread": spread}


def within_pair_logs(clean: pd.DataFrame, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """log(distance / pair median) and log(speed / pair median speed) of trips between pairs
    listed in ``table`` (medians computed here, from ``clean``)."""
    ckey = clean.PULocationID * 1000 + clean.DOLocationID
    listed = ckey.isin(set((table.pu * 1000 + table.do).tolist())).to_numpy()
    c = clean[listed]
    k = ckey[listed]
    med_d = c.groupby(k).trip_distance.transform("median").to_numpy()
    med_s = c.groupby(k).speed_adj.transform("median").to_numpy()
    return np.log(c.trip_distance.to_numpy() / med_d), np.log(c.speed_adj.to_numpy() / med_s)


def residuals(clean: pd.DataFrame, table: pd.DataFrame) -> dict[str, dict[str, object]]:
    """Per segment, for trips between listed pairs: quantiles of r_d = log(distance / pair
    median distance); the slope b of r_t = log(hour-adjusted duration / pair typical duration)
    on r_d; and quantiles of what is left, e = r_t - b * r_d (drawn independently of r_d)."""
    ckey = clean.PULocationID * 1000 + clean.DOLocationID
    tkey = table.pu * 1000 + table.do
    known = table.dropna(subset=["distance"]).set_index(tkey[table.distance.notna()])
    ok = ckey.isin(known.index)
    c = clean[ok.to_numpy()]
    k = ckey[ok]
    rd = np.log(c.trip_distance.to_numpy() / known.distance.reindex(k).to_numpy())
    rs = np.log(c.speed_adj.to_numpy() / known.speed.reindex(k).to_numpy())
    rt = rd - rs
    out = {}
    for seg in SEGMENTS:
        m = (c.segment == seg).to_numpy()
        lo, hi = np.quantile(rd[m], [0.01, 0.99])
        core = m & (rd >= lo) & (rd <= hi)
        slope = float(np.polyfit(rd[core], rt[core], 1)[0])
        out[seg] = {"log_distance": quantiles(rd[m]), "duration_slope": round(slope, 4),
                    "log_duration": quantiles(rt[m] - slope * rd[m])}
    return out


def segment_profile(g: pd.DataFrame, days: int) -> dict[str, object]:
    """Volumes, mixes, time profile and outlier shares of one segment's trips over ``days``."""
    zero = g.trip_distance == 0
    absurd = g.trip_distance >= 100
    long_trips = g.duration > 60
    short = g.duration < 1
    hw = pd.crosstab(g.weekday, g.hour).reindex(index=range(7), columns=range(24), fill_value=0)
    return {
        "trips_per_day": round(len(g) / days, 2),
        "vendor2_share": round(float((g.VendorID == 2).mean()), 4),
        "zero_distance_share": round(float(zero.mean()), 5),
        "under_minute_share_if_zero": round(float(short[zero].mean()), 5),
        "under_minute_share_if_moving": round(float(short[~zero].mean()), 5),
        "over_hour_share": round(float(long_trips[~short].mean()), 5),
        "over_hour_log_minutes": quantiles(np.log(g.duration[long_trips].to_numpy())),
        "absurd_distance_share": round(float(absurd.mean()), 6),
        "absurd_log10_miles": quantiles(np.log10(g.trip_distance[absurd].to_numpy())),
        "hour_by_weekday": hw.to_numpy().tolist(),
        "passenger_count": shares(g.passenger_count),
        "payment_type": shares(g.payment_type),
        "RatecodeID": shares(g.RatecodeID),
        "trip_type": shares(g.trip_type),
        "store_and_fwd_Y_share": round(float((g.store_and_fwd_flag == "Y").mean()), 5),
        "extra": shares(g.extra),
        "mta_tax": shares(g.mta_tax),
        "improvement_surcharge": shares(g.improvement_surcharge),
        "congestion_surcharge": shares(g.congestion_surcharge),
        "tolls_share": round(float((g.tolls_amount > 0).mean()), 4),
        "tolls_amount": shares(g.tolls_amount[g.tolls_amount > 0].round(2)),
        "tip_share": round(float((g.tip_amount > 0).mean()), 4),
        "tip_fraction": quantiles((g.tip_amount / g.fare_amount.clip(lower=1))[g.tip_amount > 0]
                                  .clip(0, 1).to_numpy()),
        "fare": fare_model(g),
    }


def fare_model(g: pd.DataFrame) -> dict[str, float]:
    """fare_amount ~ a + b * miles + c * minutes (least squares on ordinary trips), residual sd."""
    ok = g.duration.between(1, 60) & g.trip_distance.between(0.1, 60) & (g.fare_amount > 0)
    x = np.column_stack([np.ones(ok.sum()), g.trip_distance[ok], g.duration[ok]])
    y = g.fare_amount[ok].to_numpy()
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    return {"base": round(float(coef[0]), 3), "per_mile": round(float(coef[1]), 3),
            "per_minute": round(float(coef[2]), 3), "noise_sd": round(float(np.std(resid)), 3)}


def tail_marginals(df: pd.DataFrame, table: pd.DataFrame, boro: np.ndarray) -> dict[str, object]:
    """Per segment: pickup-zone counts of trips outside the listed pairs, and per pickup borough
    the drop-off-zone counts of those trips (the generator samples unlisted pairs from them)."""
    key = df.PULocationID * 1000 + df.DOLocationID
    listed = set((table.pu * 1000 + table.do).tolist())
    tail = df[~key.isin(listed)]
    out = {}
    for seg in SEGMENTS:
        t = tail[tail.segment == seg]
        pu = np.bincount(t.PULocationID, minlength=N_ZONES)[:N_ZONES]
        do_by_borough = []
        for b in range(len(BOROUGHS)):
            sub = t[boro[t.PULocationID] == b]
            counts = np.bincount(sub.DOLocationID, minlength=N_ZONES)[:N_ZONES]
            do_by_borough.append(counts.tolist())
        out[seg] = {"trips": int(len(t)), "pickup_zone": pu.tolist(),
                    "dropoff_zone_by_pickup_borough": do_by_borough}
    return out


def calibrate(folder: Path) -> dict[str, object]:
    """The whole profile, as a JSON-ready dict."""
    lookup = folder / "taxi_zone_lookup.csv"
    if not lookup.is_file():
        raise SystemExit(f"no taxi_zone_lookup.csv in {folder}: the TLC zone table is needed too")
    zones = pd.read_csv(lookup)
    boro = borough_index(zones)
    df, months = load_months(folder)
    n_months = len(months)
    clean = clean_trips(df)
    hf = hour_factors(clean)
    seg_idx = (clean.segment == "dispatch").to_numpy().astype(int)
    factors = np.array([hf["street"], hf["dispatch"]])
    clean["speed_adj"] = clean.speed / factors[seg_idx, clean.hour.to_numpy()]
    table, borough_info = pair_table(df, clean, boro, n_months)
    days = sum(pd.Period(m).days_in_month for m in months)
    segments = {seg: segment_profile(df[df.segment == seg], days) for seg in SEGMENTS}
    return {
        "source": "NYC TLC green trip records " + ", ".join(months),
        "months": months,
        "boroughs": list(BOROUGHS),
        "zone_borough": boro.tolist(),
        "hour_speed_factor": hf,
        "segments": segments,
        "pairs": {
            "pu": table.pu.astype(int).tolist(),
            "do": table["do"].astype(int).tolist(),
            **{f"{seg}_per_month": [round(float(v), 2) for v in table[seg]] for seg in SEGMENTS},
            "distance": [None if np.isnan(v) else round(float(v), 2) for v in table.distance],
            "speed": [None if np.isnan(v) else round(float(v), 2) for v in table.speed],
        },
        **borough_info,
        "residuals": residuals(clean, table),
        "tail": tail_marginals(df, table, boro),
    }


def main() -> None:
    """Parse arguments, calibrate, write the profile and the zone table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=Path("../shared/data/tlc"),
                        help="folder with green_tripdata_YYYY-MM.parquet files and "
                             "taxi_zone_lookup.csv (default: %(default)s)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent.parent / "taxi_common" / "profile",
                        help="folder to write green_2021.json and taxi_zones.csv to "
                             "(default: the packaged taxi_common/profile)")
    args = parser.parse_args()
    profile = calibrate(args.folder)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "green_2021.json"
    path.write_text(json.dumps(profile, separators=(",", ":")) + "\n", encoding="utf-8")
    shutil.copyfile(args.folder / "taxi_zone_lookup.csv", args.out / "taxi_zones.csv")
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB) and {args.out / 'taxi_zones.csv'}")


if __name__ == "__main__":
    main()
