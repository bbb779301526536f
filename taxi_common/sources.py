"""The real TLC loader: download a month's parquet file once, cache it, read it validated.

URL scheme ``{TLC_BASE_URL}/{color}_tripdata_{YYYY}-{MM}.parquet``; ``TLC_BASE_URL`` defaults
to the TLC's own CDN, and a ``file://`` folder or an ``http://127.0.0.1:PORT`` mirror works the
same (``urllib.request`` handles all three).

The cache is ``<WORKBOOK_HOME>/data/tlc/<color>_tripdata_<YYYY-MM>.parquet``. A file only ever
appears there whole and checked: the download goes to a hidden temporary file in the same folder,
is validated (byte count, parquet footer, row count, columns), and is then moved into place with
``os.replace``. A cached file that fails its check later (someone copied a bad file there, a disk
fault) is deleted and downloaded again once.

Every failure a user can meet ends in one :class:`~taxi_common.errors.WorkbookError` line that
names the month, the color, the URL or file, and the fix. The ones that may pass by themselves (no
connection, a timeout, HTTP 429 or 5xx) are :class:`~taxi_common.errors.TransientDataError`, so
a pipeline can retry them and nothing else.
"""

from __future__ import annotations

import http.client
import logging
import os
import urllib.error
import urllib.request
import urllib.response
from pathlib import Path
from typing import IO

import pandas as pd

from taxi_common.errors import (
    BadInputError,
    DataCorruptError,
    DataUnavailableError,
    SchemaError,
    TransientDataError,
)
from taxi_common.files import atomic_write
from taxi_common.months import format_month, parse_month
from taxi_common.schema import check_month_content, trip_columns, validate_trips
from taxi_common.settings import Settings

log = logging.getLogger(__name__)

#: Seconds a single connect or read may block before the download counts as unreachable.
DEFAULT_TIMEOUT = 30.0
CHUNK_BYTES = 1 << 20
_USER_AGENT = "mlops-levels (taxi_common.sources)"
_NOT_PUBLISHED_CODES = (403, 404)  # the TLC's CDN answers 403 for a file it does not have
#: Answers that may go away on their own: too many requests, and the server's own errors.
_TRANSIENT_CODES = (429, 500, 502, 503, 504)

#: What ``urlopen`` returns: an HTTP response, or a local file's for ``file://``.
Response = http.client.HTTPResponse | urllib.response.addinfourl


def _one_line(reason: object) -> str:
    """``reason`` as a single line of text, for error messages."""
    return " ".join(str(reason).split()) or type(reason).__name__


def _check_color(color: str) -> str:
    """``color`` if the TLC publishes it; a clear :class:`BadInputError` otherwise."""
    trip_columns(color)  # raises for an unknown color
    return color


def _file_name(color: str, month: str) -> str:
    """``green_tripdata_2021-01.parquet``, after checking the color and the month."""
    year, mon = parse_month(month)
    return f"{_check_color(color)}_tripdata_{format_month(year, mon)}.parquet"


def tlc_url(color: str, month: str, base_url: str) -> str:
    """The URL of one month's file: ``{base}/{color}_tripdata_{YYYY}-{MM}.parquet``."""
    return f"{base_url.rstrip('/')}/{_file_name(color, month)}"


def cached_path(color: str, month: str, settings: Settings) -> Path:
    """Where the file of ``color`` and ``month`` lives once downloaded (it may not exist yet)."""
    return settings.data_cache_dir / _file_name(color, month)


def _not_published(color: str, month: str, detail: str) -> DataUnavailableError:
    return DataUnavailableError(
        f"{color} {month} is not published by the TLC ({detail}); TLC months appear about two "
        "months late; pick an earlier month or check TLC_BASE_URL"
    )


def _unreachable(url: str, reason: object) -> TransientDataError:
    return TransientDataError(
        f"cannot reach {url} ({_one_line(reason)}): no network? set TLC_BASE_URL to a mirror "
        "(file:// or http://127.0.0.1:PORT), or use --source synthetic"
    )


def _open_url(color: str, month: str, url: str, timeout: float) -> Response:
    """Open ``url`` for reading, turning every way it can fail into one clear error."""
    try:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    except ValueError as exc:  # "unknown url type": TLC_BASE_URL is not a URL
        raise BadInputError(
            f"TLC_BASE_URL gives {url!r}, which is not a URL ({_one_line(exc)}): use https://…, "
            "http://127.0.0.1:PORT or file:///absolute/folder"
        ) from None
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - schemes are ours
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in _NOT_PUBLISHED_CODES:
            raise _not_published(color, month, f"HTTP {exc.code} from {url}") from None
        error = TransientDataError if exc.code in _TRANSIENT_CODES else DataUnavailableError
        raise error(
            f"{url} answered HTTP {exc.code} ({_one_line(exc.reason)}) for {color} {month}: "
            "try again later, or set TLC_BASE_URL to a mirror"
        ) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, FileNotFoundError):  # a file:// mirror without that month
            raise _not_published(color, month, f"no such file: {url}") from None
        raise _unreachable(url, exc.reason) from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad status lines
        raise _unreachable(url, exc) from None


def _content_length(response: Response) -> int | None:
    """The announced size of the body, or None when the server does not say."""
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _copy_body(
    response: Response, out: IO[bytes], url: str, *, label: str, progress: bool
) -> tuple[int, int | None]:
    """Stream the body into ``out`` with a progress bar; return (bytes read, bytes announced)."""
    from tqdm.auto import tqdm

    expected = _content_length(response)
    received = 0
    with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
              disable=not progress, leave=False) as bar:
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except http.client.IncompleteRead as exc:  # chunked transfer cut short
                out.write(exc.partial)
                received += len(exc.partial)
                break
            except OSError as exc:  # timeout or reset in the middle of the body
                raise _unreachable(url, exc) from None
            if not chunk:
                break
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received, expected


def check_parquet(path: Path, color: str, source: str) -> int:
    """Check a trip file cheaply; return its row count.

    Reads the parquet footer (row count and schema), checks the columns the workbook reads
    with :func:`~taxi_common.schema.validate_trips` on an empty frame of that schema, then
    decodes those columns of the first row group and validates their values too. Raises
    :class:`DataCorruptError` or ``SchemaError``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    fix = "delete it and download again, or check TLC_BASE_URL"
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataCorruptError(
            f"{source} is not a valid parquet file ({_one_line(exc)}): {fix}"
        ) from None
    with parquet:
        rows = parquet.metadata.num_rows
        if rows <= 0 or parquet.num_row_groups == 0:
            raise DataCorruptError(f"{source} has no rows: {fix}")
        validate_trips(parquet.schema_arrow.empty_table().to_pandas(), color, source)
        cols = trip_columns(color)
        needed = [c for c in (cols.pickup, cols.dropoff, cols.pickup_zone, cols.dropoff_zone,
                              cols.distance) if c]
        try:
            first = parquet.read_row_group(0, columns=needed)
        except (pa.ArrowException, OSError) as exc:
            raise DataCorruptError(
                f"{source} cannot be decoded ({_one_line(exc)}): {fix}"
            ) from None
        validate_trips(first.to_pandas(), color, source)  # the values too (zone IDs)
    return rows


def _fetch(color: str, month: str, url: str, dest: Path, *, progress: bool,
           timeout: float) -> None:
    """Download ``url`` and move it to ``dest`` only once it is whole and valid."""
    response = _open_url(color, month, url, timeout)
    with response, atomic_write(dest) as (out, tmp):
        received, expected = _copy_body(response, out, url, label=f"{color} {month}",
                                        progress=progress)
        out.flush()
        os.fsync(out.fileno())
        out.close()
        if expected is not None and received != expected:
            raise DataCorruptError(
                f"download of {color} {month} from {url} is truncated ({received:,} of "
                f"{expected:,} bytes): the connection dropped; run the command again"
            )
        check_parquet(tmp, color, f"{color} {month} from {url}")


def _cache_hit(path: Path, color: str, month: str) -> bool:
    """True if a valid file is cached at ``path``; a corrupt one is deleted (and logged)."""
    if not path.is_file():
        return False
    try:
        check_parquet(path, color, f"cached {color} {month} file {path}")
    except (DataCorruptError, SchemaError) as exc:
        log.warning("%s; deleted it, downloading again", exc)
        path.unlink(missing_ok=True)
        return False
    return True


def download_month(
    color: str,
    month: str,
    *,
    settings: Settings,
    progress: bool = True,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """The cached file of ``color`` and ``month``, downloaded from ``TLC_BASE_URL`` if needed.

    A cached file is checked (footer, columns) and returned at once; ``force`` downloads again.
    ``timeout`` bounds each connect and read, in seconds.
    """
    path = cached_path(color, month, settings)
    if not force and _cache_hit(path, color, month):
        return path
    url = tlc_url(color, month, settings.tlc_base_url)
    _fetch(color, month, url, path, progress=progress, timeout=timeout)
    return path


def _read_validated(path: Path, color: str, month: str) -> pd.DataFrame:
    """Read the whole cached file, validate its columns and check its content (duplicate rows
    dropped, pickups in the month: :func:`~taxi_common.schema.check_month_content`)."""
    import pyarrow as pa

    source = f"cached {color} {month} file {path}"
    try:
        df = pd.read_parquet(path, engine="pyarrow")
    except (pa.ArrowException, OSError) as exc:
        raise DataCorruptError(
            f"{source} cannot be read ({_one_line(exc)}): it is deleted from the cache; run "
            "again, or check TLC_BASE_URL if this repeats"
        ) from None
    return check_month_content(validate_trips(df, color, source), color, month, source)


def load_month(color: str, month: str, *, settings: Settings,
               progress: bool = False) -> pd.DataFrame:
    """Raw trips of one real TLC month, downloaded or cached, validated against the schema.

    If the cached file turns out unreadable past its first row group, it is deleted and
    downloaded once more before giving up with :class:`DataCorruptError`; a file that fails the
    content check (:class:`SchemaError`) is deleted from the cache too.
    """
    path = download_month(color, month, settings=settings, progress=progress)
    try:
        return _read_validated(path, color, month)
    except SchemaError:  # not this month's trips: a corrected mirror is downloaded next time
        path.unlink(missing_ok=True)
        raise
    except DataCorruptError as exc:
        log.warning("%s; deleted it, downloading again", exc)
        path.unlink(missing_ok=True)
    path = download_month(color, month, settings=settings, progress=progress, force=True)
    try:
        return _read_validated(path, color, month)
    except DataCorruptError:
        path.unlink(missing_ok=True)
        raise
