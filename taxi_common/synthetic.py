"""A calibrated, deterministic generator of green-taxi trips, with named drift scenarios.

Every month it writes has exactly the schema of the real 2021 green files
(:data:`taxi_common.schema.GREEN_DTYPES`) and follows aggregates measured on the real months by
``scripts/calibrate_synthetic.py`` (the packaged ``profile/green_2021.json``):

* two segments, as in the real files: *street* trips (every field filled) and *dispatch* trips
  (the ≈47% block where payment_type, passenger_count, RatecodeID, trip_type,
  store_and_fwd_flag and congestion_surcharge are null together; longer trips, nearly all the
  absurd distances);
* zone pairs: the ≈3,700 pairs seen ten times or more, at their monthly frequency, plus a tail
  drawn from pickup-zone and (per pickup borough) drop-off-zone marginals, which gives a realistic
  number of distinct pairs;
* distance and speed: a typical distance and speed per zone pair (measured for the listed pairs,
  from borough-pair medians and a fixed per-pair factor otherwise), speed by pickup hour, and
  per-trip residuals drawn jointly (Gaussian copula) from the measured residual quantiles;
* outliers: zero distances, under-a-minute and over-an-hour trips, absurd distances;
* pickup times by weekday and hour; vendor, passenger, payment, rate code and fare-component mixes.

Scenarios (:mod:`taxi_common.scenarios`) change trips picked up on or after their start day only,
drawing from their own random stream: a scenario at strength 0 is the baseline month, row for row.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from taxi_common.errors import BadInputError
from taxi_common.files import atomic_write
from taxi_common.months import format_month, parse_month
from taxi_common.scenarios import SCENARIOS, Scenario, as_scenario
from taxi_common.schema import GREEN_DTYPES

PROFILE_FILE = "green_2021.json"
ZONES_FILE = "taxi_zones.csv"
SEGMENTS = ("street", "dispatch")
N_ZONES = 266  # zone IDs 1..265
_PAIR_FACTOR_SEED = 2021  # fixed: the same unlisted pair gets the same typical trip every month
#: Candidate residual draws per trip: an ordinary trip takes the first that lasts 1-60 minutes,
#: as the residuals were measured on such trips (outliers come from their own, calibrated shares).
_CANDIDATES = 4
_MAX_TYPICAL_MINUTES = 45.0

#: congestion: trips touching this borough take (1 + CONGESTION_SLOWDOWN * strength) times longer.
CONGESTION_BOROUGH = "Manhattan"
CONGESTION_SLOWDOWN = 0.5
#: hotspot: this share (x strength) of trips move to new pairs to and from HOTSPOT_ZONE.
HOTSPOT_ZONE = 93  # Flushing Meadows-Corona Park: rare in the baseline
HOTSPOT_SHARE = 0.2
#: data-quality: shares (x strength) of nulls, distances in km and distances in metres.
DQ_NULL_SHARE = 0.25
DQ_NULL_COLUMNS = ("passenger_count", "fare_amount", "total_amount")
DQ_KM_SHARE = 0.2
DQ_METRE_SHARE = 0.02
_MILE_KM = 1.609344


# ---------------------------------------------------------------------------------------------
# The profile


def load_profile() -> dict:
    """The calibration profile (a fresh dict read from the packaged JSON)."""
    text = resources.files("taxi_common").joinpath("profile", PROFILE_FILE).read_text("utf-8")
    return json.loads(text)


def zone_table() -> pd.DataFrame:
    """The TLC taxi zones: LocationID, Borough, Zone, service_zone (265 rows)."""
    with resources.as_file(resources.files("taxi_common").joinpath("profile", ZONES_FILE)) as p:
        return pd.read_csv(p, keep_default_na=False, na_values=[""])


def _mix(shares: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """A value mix from the profile as (values, cumulative probabilities)."""
    if not shares:
        return np.array([np.nan]), np.array([1.0])
    values = np.array([float(k) for k in shares])
    weights = np.array(list(shares.values()), dtype=np.float64)
    return values, np.cumsum(weights / weights.sum())


@dataclass(frozen=True)
class _Segment:
    """One segment's calibrated parameters as numpy arrays."""

    name: str
    trips_per_day: float
    raw: dict
    pair_trips: np.ndarray  # trips per month of each listed pair
    pair_cdf: np.ndarray  # over listed pairs + one final "tail" entry
    tail_pu_cdf: np.ndarray
    tail_do_cdf: np.ndarray  # (n_boroughs, N_ZONES)
    hour_cdf: np.ndarray  # (7, 24): P(hour | weekday)
    weekday_weight: np.ndarray  # (7,)
    hour_factor: np.ndarray  # (24,)
    log_distance_q: np.ndarray
    log_duration_q: np.ndarray
    duration_slope: float
    over_hour_q: np.ndarray
    absurd_q: np.ndarray
    tip_q: np.ndarray


@dataclass(frozen=True)
class _Model:
    """The compiled profile: per-pair typical distance and speed, and both segments."""

    pair_pu: np.ndarray
    pair_do: np.ndarray
    zone_borough: np.ndarray
    boroughs: tuple[str, ...]
    typical_distance: np.ndarray  # (N_ZONES, N_ZONES) miles
    typical_speed: np.ndarray  # (N_ZONES, N_ZONES) mph at an average hour
    segments: dict[str, _Segment]


def _cdf(weights: np.ndarray) -> np.ndarray:
    """Cumulative probabilities of non-negative weights (last entry exactly 1)."""
    c = np.cumsum(np.asarray(weights, dtype=np.float64))
    c /= c[-1]
    c[-1] = 1.0
    return c


def _typical_matrices(p: dict, boro: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Typical distance and speed of every zone pair: measured for listed pairs, otherwise the
    borough-pair median times fixed, correlated per-pair log-normal factors."""
    nb = len(p["boroughs"])
    bp = boro[:, None] * nb + boro[None, :]
    bpd = np.asarray(p["borough_pairs"]["distance"])[bp]
    bps = np.asarray(p["borough_pairs"]["speed"])[bp]
    rng = np.random.default_rng(_PAIR_FACTOR_SEED)
    spread = p["spread"]
    z_d = rng.standard_normal((N_ZONES, N_ZONES))
    rho = spread["rank_correlation"]
    z_s = rho * z_d + np.sqrt(1.0 - rho**2) * rng.standard_normal((N_ZONES, N_ZONES))
    f_d = np.exp(spread["distance_sigma"] * z_d)
    f_s = np.exp(spread["speed_sigma"] * z_s)
    distance = bpd * f_d
    intra = np.asarray(p["borough_pairs"]["intra_distance"])[bp]
    diag = np.arange(N_ZONES)
    distance[diag, diag] = intra[diag, diag] * np.sqrt(f_d[diag, diag])
    speed = bps * f_s
    # No made-up pair is slower end to end than the slowest real unlisted pairs (45 minutes).
    speed = np.maximum(speed, distance * 60.0 / _MAX_TYPICAL_MINUTES)
    pairs = p["pairs"]
    pu, do = np.asarray(pairs["pu"]), np.asarray(pairs["do"])
    d = np.array([np.nan if v is None else v for v in pairs["distance"]], dtype=np.float64)
    s = np.array([np.nan if v is None else v for v in pairs["speed"]], dtype=np.float64)
    known = ~np.isnan(d)
    distance[pu[known], do[known]] = d[known]
    speed[pu[known], do[known]] = s[known]
    return distance, speed


def _segment(p: dict, name: str) -> _Segment:
    """Compile one segment of the profile."""
    raw = p["segments"][name]
    tail = p["tail"][name]
    listed = np.asarray(p["pairs"][f"{name}_per_month"], dtype=np.float64)
    n_months = len(p["months"])
    tail_per_month = tail["trips"] / n_months
    hw = np.asarray(raw["hour_by_weekday"], dtype=np.float64) + 0.5
    res = p["residuals"][name]
    return _Segment(
        name=name,
        trips_per_day=raw["trips_per_day"],
        raw=raw,
        pair_trips=listed,
        pair_cdf=_cdf(np.append(listed, tail_per_month)),
        tail_pu_cdf=_cdf(np.asarray(tail["pickup_zone"], dtype=np.float64) + 1e-9),
        tail_do_cdf=np.array([_cdf(np.asarray(row, dtype=np.float64) + 1e-3)
                              for row in tail["dropoff_zone_by_pickup_borough"]]),
        hour_cdf=np.array([_cdf(row) for row in hw]),
        weekday_weight=hw.sum(axis=1) / hw.sum(),
        hour_factor=np.asarray(p["hour_speed_factor"][name], dtype=np.float64),
        log_distance_q=np.asarray(res["log_distance"]),
        log_duration_q=np.asarray(res["log_duration"]),
        duration_slope=float(res["duration_slope"]),
        over_hour_q=np.asarray(raw["over_hour_log_minutes"]),
        absurd_q=np.asarray(raw["absurd_log10_miles"]),
        tip_q=np.asarray(raw["tip_fraction"]),
    )


@functools.lru_cache(maxsize=1)
def _model() -> _Model:
    """The compiled profile, built once per process on first use."""
    p = load_profile()
    boro = np.asarray(p["zone_borough"], dtype=np.int64)
    distance, speed = _typical_matrices(p, boro)
    return _Model(
        pair_pu=np.asarray(p["pairs"]["pu"], dtype=np.int64),
        pair_do=np.asarray(p["pairs"]["do"], dtype=np.int64),
        zone_borough=boro,
        boroughs=tuple(p["boroughs"]),
        typical_distance=distance,
        typical_speed=speed,
        segments={name: _segment(p, name) for name in SEGMENTS},
    )


# ---------------------------------------------------------------------------------------------
# Drawing trips


def _days_in_month(month: str) -> int:
    """Number of days of ``month``."""
    year, mon = parse_month(month)
    return pd.Period(year=year, month=mon, freq="M").days_in_month


def default_rows(month: str) -> int:
    """A real month's volume: the calibrated trips per day times the days of ``month``."""
    per_day = sum(seg.trips_per_day for seg in _model().segments.values())
    return int(round(per_day * _days_in_month(month)))


def _segment_sizes(n_rows: int) -> dict[str, int]:
    """How many of ``n_rows`` trips each segment gets (fixed, in calibrated proportion)."""
    segs = _model().segments
    share = segs["dispatch"].trips_per_day / sum(s.trips_per_day for s in segs.values())
    n_dispatch = int(round(n_rows * share))
    return {"street": n_rows - n_dispatch, "dispatch": n_dispatch}


def _pick(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw: the index of each uniform ``u`` in the cumulative probabilities."""
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _from_quantiles(q: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Values at probabilities ``u`` of the distribution given by its percentiles ``q``."""
    return np.interp(u, np.linspace(0.0, 1.0, len(q)), q)


def _segment_quantiles(attr: str, u: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Like :func:`_from_quantiles`, with each row's own segment's percentiles ``attr``
    (linear interpolation on the evenly spaced grid, without a per-segment pass)."""
    table = np.stack([getattr(_model().segments[name], attr) for name in SEGMENTS])
    x = u * (table.shape[1] - 1)
    i = np.minimum(x.astype(np.int64), table.shape[1] - 2)
    row = seg if u.ndim == 1 else seg[:, None]
    low = table[row, i]
    return low + (x - i) * (table[row, i + 1] - low)


def _pickup_seconds(seg: _Segment, month: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Pickup times as seconds since the month's start: weekday-weighted day, hour, second."""
    days = _days_in_month(month)
    year, mon = parse_month(month)
    first_weekday = pd.Timestamp(year=year, month=mon, day=1).weekday()
    weekday_of_day = (first_weekday + np.arange(days)) % 7
    per_weekday = np.bincount(weekday_of_day, minlength=7)
    day_weight = seg.weekday_weight[weekday_of_day] / per_weekday[weekday_of_day]
    day = _pick(_cdf(day_weight), rng.random(n))
    u_hour = rng.random(n)
    # The hour is the number of cdf entries <= u_hour (each weekday's cdf rises strictly), found
    # by binary search per weekday instead of comparing every trip with all 24 entries.
    weekday = weekday_of_day[day]
    hour = np.empty(n, dtype=np.int64)
    for w in range(7):
        sel = weekday == w
        hour[sel] = np.searchsorted(seg.hour_cdf[w], u_hour[sel], side="right")
    hour = np.minimum(hour, 23)
    second = rng.integers(0, 3600, n)
    return day * 86400 + hour * 3600 + second


def _zone_pairs(seg: _Segment, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pickup and drop-off zones: listed pairs at their frequency, the rest from the tail."""
    m = _model()
    which = _pick(seg.pair_cdf, rng.random(n))
    u_pu, u_do = rng.random(n), rng.random(n)
    tail = which == len(m.pair_pu)
    listed = np.minimum(which, len(m.pair_pu) - 1)
    pu = np.where(tail, 0, m.pair_pu[listed])
    do = np.where(tail, 0, m.pair_do[listed])
    tail_pu = _pick(seg.tail_pu_cdf, u_pu[tail])
    tail_do = np.empty_like(tail_pu)
    pu_borough = m.zone_borough[tail_pu]
    for b in range(len(m.boroughs)):
        sel = pu_borough == b
        tail_do[sel] = _pick(seg.tail_do_cdf[b], u_do[tail][sel])
    pu[tail], do[tail] = tail_pu, tail_do
    return pu, do


def _draw_segment(seg: _Segment, month: str, n: int, rng: np.random.Generator
                  ) -> tuple[dict, np.ndarray]:
    """Every random draw of one segment's trips, before zone-dependent values are computed, in
    draw order, and the order that sorts them by pickup time.

    The number and order of draws depend only on ``n``, so scenarios (which change zones or
    durations afterwards) leave every other trip as it is.
    """
    raw = seg.raw
    pickup = _pickup_seconds(seg, month, n, rng)
    pu, do = _zone_pairs(seg, n, rng)
    zero = rng.random(n) < raw["zero_distance_share"]
    short_p = np.where(zero, raw["under_minute_share_if_zero"], raw["under_minute_share_if_moving"])
    short = rng.random(n) < short_p
    long_ = ~short & (rng.random(n) < raw["over_hour_share"])
    absurd = rng.random(n) < raw["absurd_distance_share"]
    cols = {
        "pickup": pickup, "pu": pu, "do": do,
        "u_distance": rng.random((n, _CANDIDATES)), "u_duration": rng.random((n, _CANDIDATES)),
        "zero": zero, "short": short, "long": long_, "absurd": absurd,
        "u_short": rng.random(n), "u_long": rng.random(n), "u_absurd": rng.random(n),
        "vendor2": rng.random(n) < raw["vendor2_share"],
        "u_fare": rng.standard_normal(n), "u_tip": rng.random(n), "u_tip_size": rng.random(n),
        "u_tolls": rng.random(n), "u_tolls_size": rng.random(n),
        "u_passengers": rng.random(n), "u_payment": rng.random(n), "u_ratecode": rng.random(n),
        "u_trip_type": rng.random(n), "u_flag": rng.random(n), "u_extra": rng.random(n),
        "u_mta": rng.random(n), "u_improvement": rng.random(n), "u_congestion": rng.random(n),
        "segment": np.full(n, SEGMENTS.index(seg.name), dtype=np.int64),
    }
    return cols, np.argsort(pickup, kind="stable")


def _draw_month(month: str, seed: int, n_rows: int) -> dict:
    """All baseline draws of a month, segment after segment, each sorted by pickup time.

    Each segment's draws are sorted straight into their slice of the month's arrays (no
    concatenation), and each is freed once placed: at 3M trips this halves the peak memory.
    """
    year, mon = parse_month(month)
    rng = np.random.default_rng([seed, year, mon, 0])
    out: dict[str, np.ndarray] = {}
    start = 0
    for name, size in _segment_sizes(n_rows).items():
        cols, order = _draw_segment(_model().segments[name], month, size, rng)
        for key in list(cols):
            values = cols.pop(key)
            if key not in out:
                out[key] = np.empty((n_rows, *values.shape[1:]), dtype=values.dtype)
            np.take(values, order, axis=0, out=out[key][start:start + size], mode="clip")
            del values
        start += size
    return out


# ---------------------------------------------------------------------------------------------
# Scenarios


def hotspot_pairs() -> np.ndarray:
    """The new zone pairs of the hotspot scenario, as (n, 2) [pickup, drop-off] rows: to and from
    :data:`HOTSPOT_ZONE`, with the eight busiest zones of the street segment."""
    m = _model()
    by_zone = np.bincount(m.pair_do, weights=m.segments["street"].pair_trips, minlength=N_ZONES)
    by_zone[HOTSPOT_ZONE] = 0
    top = np.argsort(-by_zone, kind="stable")[:8]
    return np.array([(HOTSPOT_ZONE, z) for z in top] + [(z, HOTSPOT_ZONE) for z in top])


def _active(d: dict, scenario: Scenario) -> np.ndarray:
    """Trips the scenario acts on: picked up on or after its start day."""
    return d["pickup"] >= (scenario.start_day - 1) * 86400


def _apply_hotspot(d: dict, scenario: Scenario, rng: np.random.Generator) -> None:
    """Move a share of the active trips to the hotspot pairs (in place)."""
    pairs = hotspot_pairs()
    share = min(0.9, HOTSPOT_SHARE * scenario.strength)
    moved = _active(d, scenario) & (rng.random(len(d["pu"])) < share)
    choice = rng.integers(0, len(pairs), int(moved.sum()))
    d["pu"][moved] = pairs[choice, 0]
    d["do"][moved] = pairs[choice, 1]


def _congested(d: dict, scenario: Scenario) -> np.ndarray:
    """Active trips that start or end in the congested borough."""
    m = _model()
    b = m.boroughs.index(CONGESTION_BOROUGH)
    touches = (m.zone_borough[d["pu"]] == b) | (m.zone_borough[d["do"]] == b)
    return _active(d, scenario) & touches


def _apply_data_quality(df: pd.DataFrame, active: np.ndarray, strength: float,
                        rng: np.random.Generator) -> None:
    """Nulls in some columns and distances in the wrong unit, on active trips (in place)."""
    n = len(df)
    for col in DQ_NULL_COLUMNS:
        hit = active & (rng.random(n) < min(1.0, DQ_NULL_SHARE * strength))
        df.loc[hit, col] = np.nan
    u = rng.random(n)
    km = active & (u < min(1.0, DQ_KM_SHARE * strength))
    metre = active & ~km & (u < min(1.0, (DQ_KM_SHARE + DQ_METRE_SHARE) * strength))
    distance = df["trip_distance"].to_numpy(copy=True)
    distance[km] = np.round(distance[km] * _MILE_KM, 2)
    distance[metre] = np.round(distance[metre] * _MILE_KM * 1000.0, 0)
    df["trip_distance"] = distance


# ---------------------------------------------------------------------------------------------
# From draws to the TLC table


def _trip_geometry(d: dict, congested: np.ndarray, slowdown: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reported distance (miles), true distance and duration (seconds) of every trip; the
    ``congested`` trips take ``slowdown`` times longer."""
    m = _model()
    segs = [m.segments[name] for name in SEGMENTS]
    seg = d["segment"]
    hour = (d["pickup"] // 3600) % 24
    s0 = (seg == 0)[:, None]
    log_d = _segment_quantiles("log_distance_q", d["u_distance"], seg)
    log_t = _segment_quantiles("log_duration_q", d["u_duration"], seg)
    log_t += np.where(s0, segs[0].duration_slope, segs[1].duration_slope) * log_d
    hour_factor = np.where(seg == 0, segs[0].hour_factor[hour], segs[1].hour_factor[hour])
    typical_d = m.typical_distance[d["pu"], d["do"]][:, None]
    typical_s = (m.typical_speed[d["pu"], d["do"]] * hour_factor)[:, None]
    # In place (the same products, operand for operand): at 3M trips each (n, 4) temporary is
    # 96 MB of fresh pages.
    candidates_d = np.exp(log_d, out=log_d)
    candidates_d *= typical_d
    np.maximum(np.round(candidates_d, 2, out=candidates_d), 0.01, out=candidates_d)
    candidates_m = np.exp(log_t, out=log_t)
    candidates_m *= 60.0 * typical_d / typical_s
    fits = (candidates_m >= 1.0) & (candidates_m <= 60.0)
    first = np.where(fits.any(axis=1), fits.argmax(axis=1), 0)
    rows = np.arange(len(first))
    true_distance = candidates_d[rows, first]
    minutes = candidates_m[rows, first]
    long_q = _segment_quantiles("over_hour_q", d["u_long"], seg)
    minutes = np.where(d["long"], np.exp(long_q), minutes)
    minutes = np.where(congested, minutes * slowdown, minutes)
    minutes = np.where(d["short"], d["u_short"], minutes)
    seconds = np.clip(np.round(minutes * 60.0), 0, 86399).astype(np.int64)
    absurd_q = _segment_quantiles("absurd_q", d["u_absurd"], seg)
    reported = np.where(d["zero"], 0.0, true_distance)
    reported = np.where(d["absurd"], np.round(10.0**absurd_q, 2), reported)
    return reported, true_distance, seconds


def _choose(mix: tuple[np.ndarray, np.ndarray], u: np.ndarray) -> np.ndarray:
    """Values drawn from a (values, cdf) mix with uniforms ``u``."""
    values, cdf = mix
    return values[_pick(cdf, u)]


def _by_segment(d: dict, key: str, u_key: str) -> np.ndarray:
    """Per trip, a value of the mix ``key`` of its segment (NaN where the segment has none)."""
    m = _model()
    out = np.empty(len(d[u_key]))
    for i, name in enumerate(SEGMENTS):
        sel = d["segment"] == i
        out[sel] = _choose(_mix(m.segments[name].raw[key]), d[u_key][sel])
    return out


def _money(d: dict, true_distance: np.ndarray, seconds: np.ndarray) -> dict[str, np.ndarray]:
    """Fare, extras, tip, tolls and total of every trip."""
    m = _model()
    n = len(seconds)
    minutes = np.minimum(seconds / 60.0, 180.0)
    fare = np.empty(n)
    tip = np.zeros(n)
    tolls = np.empty(n)
    payment = _by_segment(d, "payment_type", "u_payment")
    for i, name in enumerate(SEGMENTS):
        sel = d["segment"] == i
        seg = m.segments[name]
        f = seg.raw["fare"]
        raw_fare = (f["base"] + f["per_mile"] * np.minimum(true_distance[sel], 100.0)
                    + f["per_minute"] * minutes[sel] + f["noise_sd"] * d["u_fare"][sel])
        fare[sel] = np.maximum(np.round(raw_fare * 2) / 2 if name == "street"
                               else np.round(raw_fare, 2), 2.5)
        tipped = d["u_tip"][sel] < seg.raw["tip_share"]
        if name == "street":
            tipped &= payment[sel] == 1.0
        tip_frac = _from_quantiles(seg.tip_q, d["u_tip_size"][sel])
        tip[sel] = np.where(tipped, np.round(fare[sel] * tip_frac, 2), 0.0)
        tolls_values = _choose(_mix(seg.raw["tolls_amount"]), d["u_tolls_size"][sel])
        tolls[sel] = np.where(d["u_tolls"][sel] < seg.raw["tolls_share"], tolls_values, 0.0)
    extra = _by_segment(d, "extra", "u_extra")
    mta = _by_segment(d, "mta_tax", "u_mta")
    improvement = _by_segment(d, "improvement_surcharge", "u_improvement")
    congestion = _by_segment(d, "congestion_surcharge", "u_congestion")
    total = fare + extra + mta + tip + tolls + improvement + np.nan_to_num(congestion)
    return {"fare_amount": fare, "extra": extra, "mta_tax": mta, "tip_amount": tip,
            "tolls_amount": tolls, "improvement_surcharge": improvement,
            "total_amount": np.round(total, 2), "payment_type": payment,
            "congestion_surcharge": congestion}


def _table(d: dict, month: str, reported: np.ndarray, true_distance: np.ndarray,
           seconds: np.ndarray) -> pd.DataFrame:
    """The trips as a DataFrame with exactly the green TLC columns, order and dtypes."""
    n = len(seconds)
    start = np.datetime64(f"{month}-01T00:00:00", "us")
    pickup = start + d["pickup"].astype("timedelta64[s]").astype("timedelta64[us]")
    dropoff = pickup + seconds.astype("timedelta64[s]").astype("timedelta64[us]")
    money = _money(d, true_distance, seconds)
    street = d["segment"] == 0
    flag = np.where(d["u_flag"] < _model().segments["street"].raw["store_and_fwd_Y_share"],
                    "Y", "N").astype(object)
    flag[~street] = None
    cols = {
        "VendorID": np.where(d["vendor2"], 2, 1).astype(np.int64),
        "lpep_pickup_datetime": pickup,
        "lpep_dropoff_datetime": dropoff,
        "store_and_fwd_flag": flag,
        "RatecodeID": _by_segment(d, "RatecodeID", "u_ratecode"),
        "PULocationID": d["pu"].astype(np.int64),
        "DOLocationID": d["do"].astype(np.int64),
        "passenger_count": _by_segment(d, "passenger_count", "u_passengers"),
        "trip_distance": reported,
        **{k: money[k] for k in ("fare_amount", "extra", "mta_tax", "tip_amount",
                                 "tolls_amount")},
        "ehail_fee": np.full(n, None, dtype=object),
        "improvement_surcharge": money["improvement_surcharge"],
        "total_amount": money["total_amount"],
        "payment_type": money["payment_type"],
        "trip_type": _by_segment(d, "trip_type", "u_trip_type"),
        "congestion_surcharge": money["congestion_surcharge"],
    }
    # Every array above is new and owned by the frame alone: no copy into consolidated blocks
    # (at 3M trips that copy took as long as drawing the trips).
    df = pd.DataFrame(cols, copy=False)
    # Cast only the columns whose dtype differs (none, today): astype would copy every column.
    wrong = {name: dtype for name, dtype in GREEN_DTYPES.items() if str(df[name].dtype) != dtype}
    return df.astype(wrong) if wrong else df


def generate_month(
    month: str,
    *,
    seed: int = 0,
    scenario: Scenario | str = "baseline",
    n_rows: int | None = None,
) -> pd.DataFrame:
    """A synthetic month of green-taxi trips in the exact TLC schema.

    Deterministic: the same (month, seed, scenario, n_rows) gives the same frame. ``n_rows``
    defaults to a real month's volume (about 76,000 for January). The scenario acts on trips picked
    up on or after its start day, with its own random stream; at strength 0 it changes nothing.
    """
    year, mon = parse_month(month)
    month = format_month(year, mon)  # " 2021-01" passes parse_month; the timestamps need "2021-01"
    spec = as_scenario(scenario)
    n = default_rows(month) if n_rows is None else int(n_rows)
    if n < 0:
        raise BadInputError(f"number of rows {n} must not be negative")
    d = _draw_month(month, seed, n)
    scenario_rng = np.random.default_rng([seed, year, mon, 1 + list(SCENARIOS).index(spec.name)])
    if spec.name == "hotspot" and spec.strength > 0:
        _apply_hotspot(d, spec, scenario_rng)
    congested = np.zeros(n, dtype=bool)
    if spec.name == "congestion" and spec.strength > 0:
        congested = _congested(d, spec)
    slowdown = 1.0 + CONGESTION_SLOWDOWN * spec.strength
    reported, true_distance, seconds = _trip_geometry(d, congested, slowdown)
    df = _table(d, month, reported, true_distance, seconds)
    if spec.name == "data-quality" and spec.strength > 0:
        _apply_data_quality(df, _active(d, spec), spec.strength, scenario_rng)
    return df


def write_month(
    month: str,
    out: Path,
    *,
    seed: int = 0,
    scenario: Scenario | str = "baseline",
    n_rows: int | None = None,
) -> Path:
    """Generate a month and write it to ``out`` as parquet, atomically and byte-reproducibly."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = generate_month(month, seed=seed, scenario=scenario, n_rows=n_rows)
    out = Path(out)
    table = pa.Table.from_pandas(df, preserve_index=False)
    with atomic_write(out) as (file, _):
        pq.write_table(table, file, compression="snappy", use_dictionary=True,
                       write_statistics=True, row_group_size=1 << 20)
    return out
