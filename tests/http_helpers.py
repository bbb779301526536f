"""A small HTTP server on 127.0.0.1 in a background thread, for tests (mirrors, receivers)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that does not print every request."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@contextlib.contextmanager
def serving(handler: Callable[..., Any]) -> Iterator[str]:
    """``handler`` served by a threading HTTP server on a free port of 127.0.0.1; yields its
    base URL (``http://127.0.0.1:PORT``), shut down when the block ends."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
