"""PostgreSQL for the tests that use it for real; they skip, with the reason, where it is not up."""

from __future__ import annotations

from typing import Any

import pytest

#: PostgreSQL as the development and CI machines run it (trust auth, database ``test``).
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


def postgres_admin_connection() -> Any:
    """An autocommit psycopg2 connection to the ``test`` database; skips the test with the reason
    when PostgreSQL does not answer on 127.0.0.1:5432."""
    import psycopg2

    try:
        conn = psycopg2.connect(**POSTGRES, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not running on 127.0.0.1:5432 ({str(exc).strip()})")
    conn.autocommit = True
    return conn
