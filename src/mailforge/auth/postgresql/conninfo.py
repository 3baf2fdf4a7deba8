"""The connection string of the PostgreSQL accounts database: the configured DSN with the
password from [accounts] password_file, and the same DSN made fit for a log line or an error
message (`redacted`: the password never shows, however it was given)."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ...errors import UsageError

HIDDEN = "***"


def with_password(dsn: str, password_file: Path | None) -> str:
    """`dsn` as libpq takes it, with the password read from `password_file` when given (else
    libpq finds one in the DSN, PGPASSWORD or ~/.pgpass)."""
    parse(dsn)
    if password_file is None:
        return dsn
    try:
        password = password_file.read_text().splitlines()[0] if password_file.stat().st_size else ""
    except OSError as exc:
        raise UsageError(f"[accounts] password_file {password_file}: {exc.strerror}") from None
    if not password:
        raise UsageError(f"[accounts] password_file {password_file} is empty")
    return make_conninfo(dsn, password=password)


def redacted(dsn: str) -> str:
    """`dsn` with any password replaced by HIDDEN, as key=value pairs."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(an unreadable dsn)"
    if "password" in params:
        params["password"] = HIDDEN
    return make_conninfo(**params)


def parse(dsn: str) -> dict[str, str]:
    """The DSN's parameters; UsageError (without the DSN, which may hold a password) for one
    that libpq cannot read."""
    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise UsageError("[accounts] dsn: not a valid connection string (libpq's key=value "
                         "pairs or a postgresql:// URL)") from None
