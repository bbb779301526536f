"""The real TLC loader against real servers on 127.0.0.1: the mirror of the real files, and a
tiny server of our own that serves whatever bytes a test gives it (cut files, lying headers)."""

from __future__ import annotations

import http.server
import io
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from taxi_common.errors import (
    BadInputError,
    DataCorruptError,
    DataUnavailableError,
    SchemaError,
    TransientDataError,
)
from taxi_common.local_servers import free_port
from taxi_common.prepare import prepare_trips
from taxi_common.schema import GREEN_DTYPES
from taxi_common.settings import Settings
from taxi_common.sources import cached_path, download_month, load_month, tlc_url

JAN = "green_tripdata_2021-01.parquet"


# --- a tiny HTTP server serving given bytes, counting requests -------------------------------


@dataclass
class Body:
    """What the server answers for one file: the bytes and the Content-Length it announces."""

    data: bytes = b""
    announced: int | None = -1  # -1: the true length; None: no Content-Length header
    status: int = 200


@dataclass
class FileServer:
    """A running server: put files in ``files``, read the paths asked for in ``requests``."""

    base_url: str
    files: dict[str, Body] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


def _handler(served: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            served.requests.append(self.path)
            body = served.files.get(self.path.lstrip("/"))
            if body is None or body.status != 200:
                self.send_error(404 if body is None else body.status)
                return
            self.send_response(200)
            if body.announced is not None:
                size = len(body.data) if body.announced == -1 else body.announced
                self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(body.data)  # HTTP/1.0: the connection closes after this

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """A fresh server on a free port of 127.0.0.1, stopped after the test."""
    served = FileServer(base_url="")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    served.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _settings(tmp_path: Path, base_url: str) -> Settings:
    return Settings(workbook_home=tmp_path / "workbook", tlc_base_url=base_url)


def _cache_files(settings: Settings) -> list[str]:
    """Every file in the cache folder, hidden temporary files included."""
    folder = settings.data_cache_dir
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    df.to_parquet(buffer, engine="pyarrow", index=False)
    return buffer.getvalue()


def _green_frame(n: int = 3) -> pd.DataFrame:
    """A small frame with the exact green schema (the values do not matter here, except that
    the rows differ: the loader drops exact duplicates)."""
    pickup = pd.Timestamp("2021-01-01 08:00") + pd.to_timedelta(range(n), unit="min")
    df = pd.DataFrame({
        "lpep_pickup_datetime": pickup,
        "lpep_dropoff_datetime": pickup + pd.Timedelta(minutes=12),
        "PULocationID": [74] * n, "DOLocationID": [75] * n, "trip_distance": [1.5] * n,
    })
    for name, dtype in GREEN_DTYPES.items():
        if name not in df:
            df[name] = pd.Series([None] * n, dtype=object) if dtype == "object" else 1
    return df[list(GREEN_DTYPES)].astype(GREEN_DTYPES)


# --- names and paths ---------------------------------------------------------------------------


def test_url_and_cache_path_follow_the_tlc_scheme(settings: Settings) -> None:
    assert tlc_url("green", "2021-01", "https://example.org/trip-data/") == (
        "https://example.org/trip-data/green_tripdata_2021-01.parquet")
    assert tlc_url("fhv", "2019-12", "file:///srv/tlc") == "file:///srv/tlc/fhv_tripdata_2019-12.parquet"
    path = cached_path("yellow", "2022-03", settings)
    assert path == settings.data_cache_dir / "yellow_tripdata_2022-03.parquet"
    assert not settings.workbook_home.exists()  # naming a path creates nothing


@pytest.mark.parametrize(("color", "month", "word"), [
    ("red", "2021-01", "color"), ("green", "2021-13", "YYYY-MM"), ("green", "21-01", "YYYY-MM"),
])
def test_bad_color_or_month_is_a_user_error(settings: Settings, color: str, month: str,
                                            word: str) -> None:
    with pytest.raises(BadInputError, match=word):
        download_month(color, month, settings=settings, progress=False)
    assert not settings.workbook_home.exists()


def test_base_url_that_is_not_a_url(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "mirror/tlc")
    with pytest.raises(BadInputError, match="TLC_BASE_URL .* not a URL"):
        download_month("green", "2021-01", settings=settings, progress=False)


# --- the real files through the mirror ---------------------------------------------------------


@pytest.mark.tlc
@pytest.mark.parametrize(("month", "raw", "kept"), [("2021-01", 76_518, 73_908),
                                                     ("2021-02", 64_572, 61_921)])
def test_real_months_download_load_and_prepare(tlc_settings: Settings, tlc_dir: Path, month: str,
                                               raw: int, kept: int) -> None:
    path = download_month("green", month, settings=tlc_settings, progress=False)
    assert path == cached_path("green", month, tlc_settings)
    assert path.read_bytes() == (tlc_dir / f"green_tripdata_{month}.parquet").read_bytes()
    assert _cache_files(tlc_settings) == [path.name]  # no temporary file left behind
    df = load_month("green", month, settings=tlc_settings)
    assert len(df) == raw
    assert {c: str(t) for c, t in df.dtypes.items()} == GREEN_DTYPES
    assert len(prepare_trips(df, "green")) == kept


@pytest.mark.tlc
def test_cache_hit_does_not_ask_the_server(file_server: FileServer, tlc_dir: Path,
                                           tmp_path: Path) -> None:
    file_server.files[JAN] = Body((tlc_dir / JAN).read_bytes())
    settings = _settings(tmp_path, file_server.base_url)
    first = download_month("green", "2021-01", settings=settings, progress=False)
    stat = first.stat()
    second = download_month("green", "2021-01", settings=settings, progress=False)
    assert len(load_month("green", "2021-01", settings=settings)) == 76_518
    assert second == first
    assert (second.stat().st_ino, second.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert file_server.requests == [f"/{JAN}"]
    download_month("green", "2021-01", settings=settings, progress=False, force=True)
    assert file_server.requests == [f"/{JAN}"] * 2


@pytest.mark.tlc
def test_file_url_mirror_works_the_same(tlc_dir: Path, tmp_path: Path) -> None:
    settings = _settings(tmp_path, tlc_dir.as_uri())
    df = load_month("green", "2021-02", settings=settings)
    assert len(df) == 64_572
    path = cached_path("green", "2021-02", settings)
    assert path.read_bytes() == (tlc_dir / "green_tripdata_2021-02.parquet").read_bytes()
    assert _cache_files(settings) == [path.name]


@pytest.mark.tlc
def test_progress_bar_shows_the_download(tlc_settings: Settings,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    download_month("green", "2021-01", settings=tlc_settings, progress=True)
    assert "green 2021-01" in capsys.readouterr().err


# --- faults: a clear error, and nothing in the cache -------------------------------------------


@pytest.mark.tlc
def test_unpublished_month_on_the_mirror(tlc_settings: Settings) -> None:
    url = tlc_url("green", "2031-01", tlc_settings.tlc_base_url)
    with pytest.raises(DataUnavailableError) as info:
        load_month("green", "2031-01", settings=tlc_settings)
    message = str(info.value)
    assert message.startswith("green 2031-01 is not published by the TLC (HTTP 404 from ")
    assert url in message and "pick an earlier month" in message and "\n" not in message
    assert _cache_files(tlc_settings) == []


def test_forbidden_counts_as_unpublished(file_server: FileServer, tmp_path: Path) -> None:
    # The TLC's CDN answers 403, not 404, for a month it does not have.
    file_server.files["green_tripdata_2031-01.parquet"] = Body(status=403)
    settings = _settings(tmp_path, file_server.base_url)
    with pytest.raises(DataUnavailableError,
                       match="not published by the TLC \\(HTTP 403 from") as info:
        download_month("green", "2031-01", settings=settings, progress=False)
    assert not isinstance(info.value, TransientDataError)  # waiting will not publish it
    assert _cache_files(settings) == []


def test_missing_file_on_a_file_url_mirror(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    settings = _settings(tmp_path, mirror.as_uri())
    with pytest.raises(DataUnavailableError, match="green 2021-05 is not published .*no such file"):
        download_month("green", "2021-05", settings=settings, progress=False)
    assert _cache_files(settings) == []


def test_server_down(tmp_path: Path) -> None:
    port = free_port()  # free a moment ago: nobody listens there
    settings = _settings(tmp_path, f"http://127.0.0.1:{port}")
    with pytest.raises(TransientDataError) as info:  # a DataUnavailableError worth retrying
        download_month("green", "2021-01", settings=settings, progress=False)
    message = str(info.value)
    assert message.startswith(f"cannot reach http://127.0.0.1:{port}/green_tripdata_2021-01")
    assert "refused" in message and "TLC_BASE_URL" in message and "--source synthetic" in message
    assert _cache_files(settings) == []


def test_server_that_never_answers_times_out(tmp_path: Path) -> None:
    with socket.socket() as sock:  # listens (the kernel accepts the connection), never replies
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        settings = _settings(tmp_path, f"http://127.0.0.1:{sock.getsockname()[1]}")
        with pytest.raises(TransientDataError, match="cannot reach .*timed out"):
            download_month("green", "2021-01", settings=settings, progress=False, timeout=0.5)
    assert _cache_files(settings) == []


def test_server_error_is_not_called_unpublished(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files[JAN] = Body(status=503)
    settings = _settings(tmp_path, file_server.base_url)
    with pytest.raises(TransientDataError, match="answered HTTP 503 .* try again later"):
        download_month("green", "2021-01", settings=settings, progress=False)
    assert _cache_files(settings) == []


def test_a_client_error_is_not_transient(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files[JAN] = Body(status=401)
    settings = _settings(tmp_path, file_server.base_url)
    with pytest.raises(DataUnavailableError, match="answered HTTP 401") as info:
        download_month("green", "2021-01", settings=settings, progress=False)
    assert not isinstance(info.value, TransientDataError)  # retrying will not authorise it


@pytest.mark.tlc
def test_connection_dropped_before_announced_length(file_server: FileServer, tlc_dir: Path,
                                                    tmp_path: Path) -> None:
    data = (tlc_dir / JAN).read_bytes()
    file_server.files[JAN] = Body(data[: len(data) // 2], announced=len(data))
    settings = _settings(tmp_path, file_server.base_url)
    with pytest.raises(DataCorruptError) as info:
        download_month("green", "2021-01", settings=settings, progress=False)
    assert f"is truncated ({len(data) // 2:,} of {len(data):,} bytes)" in str(info.value)
    assert "green 2021-01" in str(info.value) and "run the command again" in str(info.value)
    assert _cache_files(settings) == []


@pytest.mark.tlc
@pytest.mark.parametrize("announced", [-1, None], ids=["honest-length", "no-length"])
def test_cut_file_is_not_a_parquet_file(file_server: FileServer, tlc_dir: Path, tmp_path: Path,
                                        announced: int | None) -> None:
    data = (tlc_dir / JAN).read_bytes()
    file_server.files[JAN] = Body(data[:100_000], announced=announced)
    settings = _settings(tmp_path, file_server.base_url)
    with pytest.raises(DataCorruptError, match="green 2021-01 from .* is not a valid parquet file"):
        download_month("green", "2021-01", settings=settings, progress=False)
    assert _cache_files(settings) == []


def test_html_page_instead_of_parquet(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files[JAN] = Body(b"<html><body>Access denied</body></html>\n")
    settings = _settings(tmp_path, file_server.base_url)
    with pytest.raises(DataCorruptError) as info:
        load_month("green", "2021-01", settings=settings)
    assert "not a valid parquet file" in str(info.value) and "\n" not in str(info.value)
    assert _cache_files(settings) == []


def test_wrong_schema(file_server: FileServer, tmp_path: Path) -> None:
    df = _green_frame().drop(columns=["lpep_dropoff_datetime", "trip_distance"])
    file_server.files[JAN] = Body(_parquet_bytes(df))
    settings = _settings(tmp_path, file_server.base_url)
    with pytest.raises(SchemaError, match="column 'lpep_dropoff_datetime' is missing"):
        download_month("green", "2021-01", settings=settings, progress=False)
    assert _cache_files(settings) == []


def test_yellow_file_under_a_green_name(file_server: FileServer, tmp_path: Path) -> None:
    df = _green_frame().rename(columns=lambda c: c.replace("lpep_", "tpep_"))
    file_server.files[JAN] = Body(_parquet_bytes(df))
    file_server.files["yellow_tripdata_2021-01.parquet"] = Body(_parquet_bytes(df))
    settings = _settings(tmp_path, file_server.base_url)
    with pytest.raises(SchemaError, match="is this a green taxi trip file"):
        download_month("green", "2021-01", settings=settings, progress=False)
    assert _cache_files(settings) == []
    path = download_month("yellow", "2021-01", settings=settings, progress=False)
    assert _cache_files(settings) == [path.name]


def test_file_without_rows(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files[JAN] = Body(_parquet_bytes(_green_frame(0)))
    settings = _settings(tmp_path, file_server.base_url)
    with pytest.raises(DataCorruptError, match="has no rows"):
        download_month("green", "2021-01", settings=settings, progress=False)
    assert _cache_files(settings) == []


def test_small_valid_file_is_cached(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files[JAN] = Body(_parquet_bytes(_green_frame(5)))
    settings = _settings(tmp_path, file_server.base_url)
    df = load_month("green", "2021-01", settings=settings)
    assert len(df) == 5
    assert _cache_files(settings) == [JAN]
    assert oct(cached_path("green", "2021-01", settings).stat().st_mode & 0o777) == "0o644"


def test_fhv_files_need_no_distance(file_server: FileServer, tmp_path: Path) -> None:
    t0 = pd.Timestamp("2021-01-01 08:00")
    df = pd.DataFrame({"dispatching_base_num": ["B00001"], "pickup_datetime": [t0],
                       "dropOff_datetime": [t0 + pd.Timedelta(minutes=9)],
                       "PUlocationID": [74.0], "DOlocationID": [75.0]})
    file_server.files["fhv_tripdata_2021-01.parquet"] = Body(_parquet_bytes(df))
    settings = _settings(tmp_path, file_server.base_url)
    assert len(load_month("fhv", "2021-01", settings=settings)) == 1


# --- a bad file already sitting in the cache ---------------------------------------------------


@pytest.mark.tlc
def test_garbage_in_the_cache_is_replaced(file_server: FileServer, tlc_dir: Path,
                                          tmp_path: Path) -> None:
    data = (tlc_dir / JAN).read_bytes()
    file_server.files[JAN] = Body(data)
    settings = _settings(tmp_path, file_server.base_url)
    path = cached_path("green", "2021-01", settings)
    path.parent.mkdir(parents=True)
    path.write_bytes(data[:5000])  # someone copied a half file there
    assert download_month("green", "2021-01", settings=settings, progress=False) == path
    assert path.read_bytes() == data
    assert file_server.requests == [f"/{JAN}"]


def test_garbage_in_the_cache_without_network_is_removed(tmp_path: Path) -> None:
    settings = _settings(tmp_path, f"http://127.0.0.1:{free_port()}")
    path = cached_path("green", "2021-01", settings)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 but not really")
    with pytest.raises(DataUnavailableError, match="cannot reach"):
        load_month("green", "2021-01", settings=settings)
    assert _cache_files(settings) == []


@pytest.mark.tlc
def test_damaged_column_in_the_cache_is_downloaded_again(file_server: FileServer, tlc_dir: Path,
                                                         tmp_path: Path) -> None:
    # The footer and the columns checked on a cache hit are intact; fare_amount is zeroed,
    # so only the full read in load_month finds it.
    data = (tlc_dir / JAN).read_bytes()
    file_server.files[JAN] = Body(data)
    settings = _settings(tmp_path, file_server.base_url)
    path = download_month("green", "2021-01", settings=settings, progress=False)
    chunk = next(c for c in (pq.ParquetFile(path).metadata.row_group(0).column(i)
                             for i in range(len(GREEN_DTYPES)))
                 if c.path_in_schema == "fare_amount")
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    damaged = bytearray(data)
    damaged[start:start + chunk.total_compressed_size] = bytes(chunk.total_compressed_size)
    path.write_bytes(bytes(damaged))
    assert download_month("green", "2021-01", settings=settings, progress=False) == path
    assert len(file_server.requests) == 1  # the cheap check does not read fare_amount
    assert len(load_month("green", "2021-01", settings=settings)) == 76_518
    assert len(file_server.requests) == 2
    assert path.read_bytes() == data
