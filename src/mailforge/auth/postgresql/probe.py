"""Is the PostgreSQL accounts database answering? One short connection per question, for the
supervisor's /health: a pool would keep sockets open in the supervisor, which every child it
forks would inherit."""

from __future__ import annotations

import psycopg

from .conninfo import redacted


def problem(dsn: str, timeout: float) -> str | None:
    """None when the database at `dsn` answers a query within `timeout` seconds, else why not."""
    try:
        # libpq's connect_timeout takes whole seconds, at least 2 (as the pool's connections).
        with psycopg.connect(dsn, connect_timeout=max(2, round(timeout)), autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return f"accounts database {redacted(dsn)} unavailable: {reason}"
    return None
