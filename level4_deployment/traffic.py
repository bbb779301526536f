"""Traffic for the level-4 service: ride ids, the trips of given days, replay, and the actuals.

A month of trips (synthetic by default, or real TLC) becomes the service's traffic: each trip is
sent as one ``POST /predict`` with its ``ride_id``, at a bounded rate; later, the true durations
of the trips that have ended are recorded as actuals under the same ride ids, so that
predictions and outcomes can be joined.
"""

from __future__ import annotations

import ipaddress
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from taxi_common.errors import BadInputError, WorkbookError
from taxi_common.months import parse_month
from taxi_common.scenarios import Scenario
from taxi_common.schema import trip_columns
from taxi_common.settings import Settings

RIDE_ID_HEX = 16  # 64 bits: a collision is unlikely below billions of trips
MAX_RATE = 5_000.0
TRAFFIC_COLUMNS = ("ride_id", "pickup_datetime", "dropoff_datetime", "PULocationID",
                   "DOLocationID", "trip_distance", "duration")


class ServiceUnreachableError(WorkbookError):
    """The prediction service does not answer at the URL given."""


def _zone_ids(values: pd.Series) -> np.ndarray:
    """Zone IDs as int64 (-1 where missing), whatever their dtype (int, float, categorical)."""
    return values.astype("float64").fillna(-1).to_numpy().astype(np.int64)


def _identity_frame(trips: pd.DataFrame, color: str) -> pd.DataFrame:
    """The fields that identify a trip: pickup and drop-off times (µs), zones, distance."""
    cols = trip_columns(color)
    pu = "PULocationID" if "PULocationID" in trips else cols.pickup_zone
    do = "DOLocationID" if "DOLocationID" in trips else cols.dropoff_zone
    n = len(trips)
    distance = (trips[cols.distance].astype("float64").to_numpy() if cols.distance
                else np.full(n, np.nan))
    return pd.DataFrame({
        "pickup": trips[cols.pickup].astype("datetime64[us]").to_numpy().view(np.int64),
        "dropoff": trips[cols.dropoff].astype("datetime64[us]").to_numpy().view(np.int64),
        "pu": _zone_ids(trips[pu]), "do": _zone_ids(trips[do]),
        "distance": distance,
    })


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / the golden ratio: spreads consecutive numbers
_SEED = np.uint64(0x5441584944555241)  # "TAXIDURA": the recipe's version; change it, change ids
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_CANONICAL_NAN = np.uint64(0x7FF8000000000000)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays: a bijection that spreads every input bit over
    every output bit (numpy's uint64 arithmetic wraps modulo 2^64, as the recipe needs)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _identity_hash(identity: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash per row of the identity fields (times in µs, zones, the distance's IEEE
    bits with one NaN), word by word: ``h = mix64(h ^ (word + (i + 1) * golden))``."""
    h = np.full(len(identity), _SEED, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, name in enumerate(("pickup", "dropoff", "pu", "do", "distance")):
            values = identity[name].to_numpy()
            if values.dtype.kind == "f":
                word = np.ascontiguousarray(values, dtype="<f8").view(np.uint64).copy()
                word[np.isnan(values)] = _CANONICAL_NAN
            else:
                word = values.astype(np.int64).view(np.uint64)
            h = _mix64(h ^ (word + np.uint64(i + 1) * _GOLDEN))
    return h


def occurrences(keys: np.ndarray) -> np.ndarray:
    """For each row, how many earlier rows have the same key (0 for a key seen first): the
    number that tells identical trips apart. Only the rows whose key repeats are grouped."""
    out = np.zeros(len(keys), dtype=np.uint64)
    repeated = pd.Series(keys).duplicated(keep=False).to_numpy()
    if repeated.any():
        out[repeated] = pd.Series(keys[repeated]).groupby(
            keys[repeated], sort=False).cumcount().to_numpy()
    return out


def ride_id_hex(trips: pd.DataFrame, color: str = "green") -> np.ndarray:
    """The ride ids of ``trips`` as a numpy array of 16-byte ASCII strings (``S16``), computed
    without a Python loop over rows; :func:`ride_id_for` describes the recipe."""
    base = _identity_hash(_identity_frame(trips, color))
    with np.errstate(over="ignore"):
        ids = _mix64(base + (occurrences(base) + np.uint64(1)) * _GOLDEN)
    digits = ids.astype(">u8").view(np.uint8).reshape(-1, 8)
    text = np.empty((len(ids), 2 * 8), dtype=np.uint8)
    text[:, 0::2], text[:, 1::2] = _HEX[digits >> 4], _HEX[digits & 15]
    return text.view(f"S{RIDE_ID_HEX}").ravel()


def ride_id_for(trips: pd.DataFrame, color: str = "green") -> pd.Series:
    """A 16-hex-digit (64-bit) id per trip, from its pickup and drop-off times, zones and
    distance, vectorised with numpy.

    The recipe: the fields as 64-bit words (times in µs since the epoch, zone IDs with -1 for a
    missing one, the distance's IEEE-754 bits), folded into a 64-bit hash with SplitMix64's
    finaliser; then the trip's occurrence number among identical trips (0, 1, … in row order)
    folded in the same way, and the result written as 16 lowercase hex digits. Pure integer
    arithmetic modulo 2^64: the same trip gets the same id on any machine, whatever the other
    rows are (two *different* trips whose first hash collides — odds about n²/2^65, 1 in 4
    million for a 3M-trip month — are numbered like identical trips, so ids stay unique).
    """
    ids = ride_id_hex(trips, color).astype(f"U{RIDE_ID_HEX}").astype(object)
    return pd.Series(ids, index=trips.index, name="ride_id", dtype=object)


def parse_days(text: str) -> list[int]:
    """``"1-7"`` -> 1..7, ``"3"`` -> [3], ``"1,3,5-6"`` -> [1, 3, 5, 6]; days of a month."""
    days: set[int] = set()
    for part in text.replace(" ", "").split(","):
        try:
            low, _, high = part.partition("-")
            first, last = int(low), int(high or low)
        except ValueError:
            raise BadInputError(f"days {text!r}: write them as 1-7, 3 or 1,3,5-6") from None
        if not 1 <= first <= last <= 31:
            raise BadInputError(f"days {text!r}: days of a month run from 1 to 31, in order")
        days.update(range(first, last + 1))
    return sorted(days)


def days_in_month(month: str) -> int:
    """How many days ``month`` (YYYY-MM) has."""
    year, mon = parse_month(month)
    return pd.Period(year=year, month=mon, freq="M").days_in_month


def month_traffic(month: str, *, settings: Settings, source: str = "synthetic",
                  rows: int | None = None, seed: int = 0, scenario: Scenario | str = "baseline",
                  color: str = "green") -> pd.DataFrame:
    """A month's prepared trips (the 1-60 minute filter) as traffic: :data:`TRAFFIC_COLUMNS`,
    zones as ints, in pickup order. A month of which no trip lasts 1-60 minutes is a clear
    :class:`BadInputError`: nothing to replay, label or take as a reference."""
    from taxi_common.data import load_trips
    from taxi_common.prepare import FEATURE_COLUMNS, prepare_trips

    raw = load_trips(month, settings=settings, source=source, color=color, n_rows=rows,
                     seed=seed, scenario=scenario, progress=True)
    prepared = prepare_trips(raw, color)
    if prepared.empty:
        raise BadInputError(f"{source} {color} {month}: none of its {len(raw):,} trips lasts "
                            "1-60 minutes: nothing to replay, label or monitor; check the data "
                            "or pick another month")
    for name in FEATURE_COLUMNS:
        missing = int(prepared[name].isna().sum())
        if missing:  # the service would refuse these rides: no made-up zone or distance
            raise BadInputError(f"{source} {color} {month}: {missing:,} of {len(prepared):,} "
                                f"trips have no {name}; fix the data or pick another month")
    cols = trip_columns(color)
    traffic = pd.DataFrame({
        "ride_id": ride_id_for(prepared, color),
        "pickup_datetime": prepared[cols.pickup].astype("datetime64[us]"),
        "dropoff_datetime": prepared[cols.dropoff].astype("datetime64[us]"),
        "PULocationID": _zone_ids(prepared["PULocationID"]),
        "DOLocationID": _zone_ids(prepared["DOLocationID"]),
        "trip_distance": prepared["trip_distance"].astype("float64"),
        "duration": prepared["duration"].astype("float64"),
    })
    return traffic.sort_values("pickup_datetime", kind="stable").reset_index(drop=True)


def _day_numbers(traffic: pd.DataFrame, month: str) -> pd.Series:
    """Day of the month of each pickup (0 or less, or past the month's end, for other months)."""
    start = pd.Timestamp(f"{month}-01")
    return (traffic["pickup_datetime"] - start).dt.days + 1


def trips_for_days(month: str, days: Sequence[int], *, settings: Settings,
                   source: str = "synthetic", rows: int | None = None, seed: int = 0,
                   scenario: Scenario | str = "baseline", color: str = "green") -> pd.DataFrame:
    """The traffic (see :func:`month_traffic`) of the trips picked up on ``days`` of ``month``."""
    last = days_in_month(month)
    bad = [d for d in days if not 1 <= d <= last]
    if bad or not days:
        raise BadInputError(f"days {list(days)}: {month} has days 1 to {last}")
    traffic = month_traffic(month, settings=settings, source=source, rows=rows, seed=seed,
                            scenario=scenario, color=color)
    keep = _day_numbers(traffic, month).isin(list(days))
    return traffic.loc[keep].reset_index(drop=True)


def actuals_through(month: str, through_day: int | None = None, *, settings: Settings,
                    source: str = "synthetic", rows: int | None = None, seed: int = 0,
                    scenario: Scenario | str = "baseline",
                    color: str = "green") -> list[dict[str, Any]]:
    """Rows for the actuals table: the month's trips that had ended by the end of
    ``through_day`` (default: all of them), with their ride ids and durations."""
    traffic = month_traffic(month, settings=settings, source=source, rows=rows, seed=seed,
                            scenario=scenario, color=color)
    if through_day is not None:
        last = days_in_month(month)
        if not 1 <= through_day <= last:
            raise BadInputError(f"--through-day {through_day}: {month} has days 1 to {last}")
        end = pd.Timestamp(f"{month}-01") + pd.Timedelta(days=through_day)
        traffic = traffic.loc[traffic["dropoff_datetime"] < end]
    return actual_rows(traffic)


def actual_rows(traffic: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows for the actuals table from traffic: ride id, pickup and drop-off, duration."""
    return [{"ride_id": ride_id, "pickup_datetime": pickup.to_pydatetime(),
             "dropoff_datetime": dropoff.to_pydatetime(), "duration": duration}
            for ride_id, pickup, dropoff, duration in zip(
                traffic["ride_id"], traffic["pickup_datetime"], traffic["dropoff_datetime"],
                traffic["duration"].tolist(), strict=True)]


def served_rows(traffic: pd.DataFrame, model: Any, model_version: str, *,
                variant: str = "champion") -> list[dict[str, Any]]:
    """Prediction-log rows as if ``model`` had served each trip at its pickup time: traffic for
    monitoring and simulations without a running service (a virtual clock)."""
    inputs = traffic[["PULocationID", "DOLocationID", "trip_distance"]]
    predicted = np.asarray(model.predict(inputs), dtype=np.float64).tolist()
    return [{"request_id": f"sim-{ride_id}", "logged_at": pickup.to_pydatetime(),
             "ride_id": ride_id, "PULocationID": int(pu), "DOLocationID": int(do),
             "trip_distance": float(distance), "variant": variant,
             "model_version": model_version, "prediction": prediction}
            for ride_id, pickup, pu, do, distance, prediction in zip(
                traffic["ride_id"], traffic["pickup_datetime"], traffic["PULocationID"].tolist(),
                traffic["DOLocationID"].tolist(), traffic["trip_distance"].tolist(), predicted,
                strict=True)]


# --- replay ---------------------------------------------------------------------------------

@dataclass
class ReplayResult:
    """What a replay sent and how the service answered."""

    sent: int = 0
    ok: int = 0
    rejected: int = 0  # 4xx: the service refused the ride (for example an absurd distance)
    failed: int = 0  # 5xx, timeouts, dropped connections
    versions: dict[str, int] = field(default_factory=dict)
    variants: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    first_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON-able data."""
        return asdict(self)


def check_loopback_url(url: str) -> str:
    """``url`` without a trailing slash if it is http(s) on a loopback address; else a clear
    error (replay sends thousands of requests: it is for the local service)."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parsed.scheme not in ("http", "https") or not loopback:
        raise BadInputError(f"--url {url!r}: replay sends its requests to the local service "
                            "only, e.g. http://127.0.0.1:8000")
    return url.rstrip("/")


def ride_bodies(trips: pd.DataFrame) -> Iterable[dict[str, Any]]:
    """The ``POST /predict`` body of each trip: the three model inputs and the ride id."""
    columns = [trips[c].tolist() for c in ("PULocationID", "DOLocationID", "trip_distance",
                                           "ride_id")]
    for pu, do, distance, ride_id in zip(*columns, strict=True):
        yield {"PULocationID": int(pu), "DOLocationID": int(do),
               "trip_distance": float(distance), "ride_id": str(ride_id)}


def _short(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def replay(url: str, trips: pd.DataFrame, *, rate: float = 200.0, progress: bool = True,
           timeout: float = 10.0) -> ReplayResult:
    """Send each trip as one ``POST {url}/predict`` at no more than ``rate`` requests a second,
    over one reused connection; count the answers and the model versions seen."""
    import httpx
    from tqdm import tqdm

    base = check_loopback_url(url)
    if not 0 < rate <= MAX_RATE:
        raise BadInputError(f"--rate {rate}: choose 0 < rate <= {MAX_RATE:g} requests a second")
    result, versions, variants = ReplayResult(), Counter(), Counter()
    started = time.monotonic()
    with httpx.Client(timeout=timeout) as client, tqdm(
            total=len(trips), unit="req", desc="replay", disable=not progress,
            file=sys.stderr) as bar:
        for i, body in enumerate(ride_bodies(trips)):
            wait = started + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            result.sent += 1
            try:
                response = client.post(f"{base}/predict", json=body)
            except httpx.TransportError as exc:
                if result.ok == 0 and result.rejected == 0:
                    raise ServiceUnreachableError(
                        f"the prediction service at {base} does not answer ({exc}): start it "
                        "(mlops-levels level4 serve) or pass --url") from None
                result.failed += 1
                result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    answer = response.json()
                    result.ok += 1
                    versions[str(answer.get("model_version"))] += 1
                    variants[str(answer.get("variant"))] += 1
                else:
                    if response.status_code < 500:
                        result.rejected += 1
                    else:
                        result.failed += 1
                    result.first_error = result.first_error or (
                        f"HTTP {response.status_code}: {_short(response.text)}")
            bar.update()
    result.seconds = round(time.monotonic() - started, 3)
    result.versions, result.variants = dict(versions), dict(variants)
    return result
