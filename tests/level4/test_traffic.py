"""Ride ids, the trips of given days, actuals, and the replay against a real local HTTP server."""

from __future__ import annotations

import http.server
import json
import struct
import time
from collections.abc import Iterator

import pandas as pd
import pytest

from level4_deployment import traffic
from taxi_common.data import load_trips
from taxi_common.errors import BadInputError
from taxi_common.settings import Settings
from tests.http_helpers import serving

ROWS = 4000  # a small synthetic month


def trip(pickup: str, minutes: float, pu: int = 74, do: int = 75,
         distance: float = 2.5) -> dict[str, object]:
    start = pd.Timestamp(pickup)
    return {"lpep_pickup_datetime": start,
            "lpep_dropoff_datetime": start + pd.Timedelta(minutes=minutes),
            "PULocationID": pu, "DOLocationID": do, "trip_distance": distance}


def _mix64(x: int) -> int:
    """SplitMix64's finaliser in plain Python integers (the recipe written out independently)."""
    mask = 2**64 - 1
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & mask
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)


def test_ride_id_is_a_64_bit_hash_of_fixed_width_fields() -> None:
    ids = traffic.ride_id_for(pd.DataFrame([trip("2021-03-05 08:00:00", 12.0)]))
    # the recipe in Python integers: µs since the epoch, zones, the distance's IEEE bits, then
    # occurrence 0, folded with SplitMix64 modulo 2^64, so the id is the same on every machine
    mask, golden = 2**64 - 1, 0x9E3779B97F4A7C15
    pickup_us = int(pd.Timestamp("2021-03-05 08:00:00").value // 1000)
    words = [pickup_us, pickup_us + 12 * 60 * 10**6, 74, 75,
             struct.unpack("<Q", struct.pack("<d", 2.5))[0]]
    h = 0x5441584944555241
    for i, word in enumerate(words):
        h = _mix64(h ^ ((word + (i + 1) * golden) & mask))
    assert ids.tolist() == [f"{_mix64((h + golden) & mask):016x}"]


def test_same_trip_same_id_whatever_the_other_rows_and_their_order() -> None:
    trips = pd.DataFrame([trip("2021-03-05 08:00", 12.0), trip("2021-03-05 08:00", 12.0, pu=41),
                          trip("2021-03-05 09:30", 7.0, distance=1.2)])
    ids = traffic.ride_id_for(trips)
    reordered = traffic.ride_id_for(trips.iloc[[2, 0, 1]])
    assert reordered.to_dict() == ids.to_dict()  # by index: each trip kept its id
    assert traffic.ride_id_for(trips.iloc[[1]]).tolist() == [ids.iloc[1]]
    assert ids.str.fullmatch(r"[0-9a-f]{16}").all() and ids.is_unique


def test_a_trip_that_appears_twice_gets_two_ids_the_first_one_unchanged() -> None:
    once = traffic.ride_id_for(pd.DataFrame([trip("2021-03-05 08:00", 12.0)]))
    twice = traffic.ride_id_for(pd.DataFrame([trip("2021-03-05 08:00", 12.0)] * 2))
    assert twice.iloc[0] == once.iloc[0] and twice.iloc[1] != twice.iloc[0]


def test_ride_ids_of_a_month_are_unique_and_survive_preparation(settings: Settings) -> None:
    from taxi_common.prepare import add_duration, prepare_trips

    raw = load_trips("2021-03", settings=settings, n_rows=ROWS)
    raw_ids = traffic.ride_id_for(raw)
    kept = add_duration(raw)["duration"].between(1, 60).to_numpy()
    prepared = prepare_trips(raw)  # the 1-60 minute filter drops rows, zones become categories
    assert raw_ids.is_unique and 0 < len(prepared) < len(raw)
    assert traffic.ride_id_for(prepared).tolist() == raw_ids[kept].tolist()


@pytest.mark.parametrize(("text", "days"), [("1-7", [1, 2, 3, 4, 5, 6, 7]), ("3", [3]),
                                            ("1,3,5-6", [1, 3, 5, 6]), (" 2 , 2", [2])])
def test_parse_days(text: str, days: list[int]) -> None:
    assert traffic.parse_days(text) == days


@pytest.mark.parametrize("text", ["0-3", "5-2", "a", "1-40", ""])
def test_parse_days_rejects_what_is_not_days(text: str) -> None:
    with pytest.raises(BadInputError, match="days"):
        traffic.parse_days(text)


def test_trips_for_days_are_those_days_in_pickup_order(settings: Settings) -> None:
    trips = traffic.trips_for_days("2021-03", [2, 3], settings=settings, rows=ROWS)
    assert list(trips.columns) == list(traffic.TRAFFIC_COLUMNS)
    assert set(trips["pickup_datetime"].dt.day) == {2, 3}
    assert trips["pickup_datetime"].is_monotonic_increasing
    assert trips["duration"].between(1, 60).all() and trips["PULocationID"].dtype == "int64"
    month = traffic.month_traffic("2021-03", settings=settings, rows=ROWS)
    assert set(trips["ride_id"]) <= set(month["ride_id"])


def test_trips_for_days_names_the_bad_day(settings: Settings) -> None:
    with pytest.raises(BadInputError, match="2021-02 has days 1 to 28"):
        traffic.trips_for_days("2021-02", [27, 29], settings=settings, rows=ROWS)


def test_actuals_through_a_day_are_the_trips_ended_by_its_end(settings: Settings) -> None:
    rows = traffic.actuals_through("2021-03", 3, settings=settings, rows=ROWS)
    end = pd.Timestamp("2021-03-04")
    assert rows and all(r["dropoff_datetime"] < end for r in rows)
    trips = traffic.trips_for_days("2021-03", [1, 2, 3], settings=settings, rows=ROWS)
    ended = trips[trips["dropoff_datetime"] < end]
    assert sorted(r["ride_id"] for r in rows) == sorted(ended["ride_id"])  # same ids as replayed
    assert len(traffic.actuals_through("2021-03", None, settings=settings, rows=ROWS)) > len(rows)
    with pytest.raises(BadInputError, match="--through-day 32"):
        traffic.actuals_through("2021-03", 32, settings=settings, rows=ROWS)


# --- replay against a real HTTP server on 127.0.0.1 -----------------------------------------

class _Service(http.server.BaseHTTPRequestHandler):
    """Answers POST /predict like the level-4 service; 422 past 100 miles, 500 at 77.7 miles."""

    bodies: list[dict[str, object]] = []
    connections: set[int] = set()

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        type(self).connections.add(self.client_address[1])
        if body["trip_distance"] > 100:
            self._answer(422, {"error": "invalid_ride", "message": "trip_distance: too far"})
        elif body["trip_distance"] == 77.7:
            self._answer(500, {"error": "internal_error", "message": "boom"})
        else:
            variant = "challenger" if body["PULocationID"] == 41 else "champion"
            self._answer(200, {"duration": 12.5, "model_version": "4" if variant == "challenger"
                               else "3", "variant": variant, "request_id": "r"})

    def _answer(self, status: int, payload: dict[str, object]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture
def service_url() -> Iterator[str]:
    _Service.bodies, _Service.connections = [], set()
    _Service.protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is visible
    with serving(_Service) as url:
        yield f"{url}/"


def traffic_frame(distances: list[float], pickups: list[int] | None = None) -> pd.DataFrame:
    n = len(distances)
    return pd.DataFrame({"ride_id": [f"ride{i}" for i in range(n)],
                         "PULocationID": pickups or [74] * n, "DOLocationID": [75] * n,
                         "trip_distance": distances})


def test_replay_sends_each_trip_with_its_ride_id_and_counts_the_answers(
        service_url: str) -> None:
    trips = traffic_frame([1.0, 2.0, 150.0, 77.7, 3.0, 4.0], pickups=[74, 41, 74, 74, 41, 74])
    result = traffic.replay(service_url, trips, rate=500, progress=False)
    assert _Service.bodies[0] == {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 1.0,
                                  "ride_id": "ride0"}
    assert [b["ride_id"] for b in _Service.bodies] == list(trips["ride_id"])
    assert (result.sent, result.ok, result.rejected, result.failed) == (6, 4, 1, 1)
    assert result.versions == {"3": 2, "4": 2}
    assert result.variants == {"champion": 2, "challenger": 2}
    assert result.first_error.startswith("HTTP 422")
    assert len(_Service.connections) == 1  # one connection, reused


def test_replay_keeps_to_its_rate(service_url: str) -> None:
    started = time.monotonic()
    traffic.replay(service_url, traffic_frame([1.0] * 11), rate=20, progress=False)
    assert time.monotonic() - started >= 10 / 20 * 0.95


def test_replay_to_a_service_that_is_not_running_is_one_clear_error() -> None:
    from taxi_common.local_servers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(traffic.ServiceUnreachableError, match="does not answer"):
        traffic.replay(url, traffic_frame([1.0]), progress=False)


@pytest.mark.parametrize("url", ["http://example.com:8000", "ftp://127.0.0.1:8000", "127.0.0.1"])
def test_replay_only_targets_the_local_service(url: str) -> None:
    with pytest.raises(BadInputError, match="local service only"):
        traffic.replay(url, traffic_frame([1.0]), progress=False)


def test_replay_rate_is_bounded(service_url: str) -> None:
    with pytest.raises(BadInputError, match="--rate"):
        traffic.replay(service_url, traffic_frame([1.0]), rate=0, progress=False)
