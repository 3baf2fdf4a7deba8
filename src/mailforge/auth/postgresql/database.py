"""The accounts database in PostgreSQL, shared by every node: a pool of psycopg connections
under the repositories of auth/sql/.

The pool opens connections in the background and hands out only ones that answer (its
`check`), so a database that went away and came back is used again without a restart; while
it is away, `read` and `write` raise AccountsUnavailable after [accounts] timeout. The tables
are made on first use in an empty database (or schema): the same schema and migrations as
SQLite's, with the version in a table of its own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Iterator, Sequence

import psycopg
from psycopg_pool import ConnectionPool

from ...errors import UsageError
from ..api import AccountsUnavailable
from ..sql import database as sql
from ..sql.schema import POSTGRESQL, SCHEMA_VERSION, create_schema, migrate
from .conninfo import redacted

log = logging.getLogger("mailforge.accounts")

VERSION_TABLE = "mailforge_schema"
# Every write transaction takes this transaction-level advisory lock first: one writer at a
# time, as SQLite's BEGIN IMMEDIATE, so the repositories' check-then-change steps (a mailbox
# that must not exist yet) see no other writer between them, and two nodes' first uses of an
# empty database create the tables once. The number is arbitrary, fixed: "mf" in ASCII.
WRITE_LOCK = 0x6D66
# The pool retries a lost connection with a doubling delay, unbounded, for as long as its
# reconnect_timeout: ten seconds into an outage its next try is already eight seconds away,
# and logins would keep failing that long after the database is back. With a short window
# the pool soon gives up the doubling, and the next request that needs a connection tries
# at once.
RECONNECT_WINDOW = 5.0


class _Placeholders:
    """A connection that takes the repositories' "?" placeholders (psycopg's are "%s")."""

    def __init__(self, connection: psycopg.Connection) -> None:
        self._connection = connection

    def execute(self, sql_text: str, params: Sequence[object] = ()) -> psycopg.Cursor:
        return self._connection.execute(sql_text.replace("%", "%%").replace("?", "%s"), params)


class Database(sql.Database):
    """`dsn` carries the password (conninfo.with_password); messages show it redacted."""

    def __init__(self, dsn: str, *, pool_size: int, timeout: float) -> None:
        self.name = redacted(dsn)
        self._prepared = threading.Event()
        # autocommit: a read is one statement, without BEGIN and COMMIT round trips; write()
        # opens its transactions itself. min_size=1: one connection kept warm per process.
        # libpq's connect_timeout takes whole seconds, and 1 is too short for a busy network.
        connection = {"autocommit": True, "connect_timeout": max(2, round(timeout))}
        self._pool = ConnectionPool(dsn, min_size=1, max_size=pool_size, timeout=timeout,
                                    kwargs=connection, reconnect_timeout=RECONNECT_WINDOW,
                                    check=ConnectionPool.check_connection, open=False,
                                    name="accounts")
        self._pool.open(wait=False)

    def close(self) -> None:
        self._pool.close()

    def ready(self) -> None:
        with self.read():
            pass

    @contextlib.contextmanager
    def read(self) -> Iterator[sql.Connection]:
        with self._connection() as connection:
            yield _Placeholders(connection)

    @contextlib.contextmanager
    def write(self) -> Iterator[sql.Connection]:
        with self._connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            yield _Placeholders(connection)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection to a database with mailforge's tables at SCHEMA_VERSION."""
        with self._unavailable_on_error(), self._pool.connection() as connection:
            if not self._prepared.is_set():
                self._prepare(connection)
            yield connection

    @contextlib.contextmanager
    def _unavailable_on_error(self) -> Iterator[None]:
        """Down, unreachable, no connection free in time, a failed statement: unanswered.
        psycopg's messages name the server, never the password."""
        try:
            yield
        except psycopg.Error as exc:
            raise AccountsUnavailable(f"accounts database {self.name}: "
                                      f"{str(exc).strip() or type(exc).__name__}") from None

    def _prepare(self, connection: psycopg.Connection) -> None:
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            db = _Placeholders(connection)
            version = _version(connection)
            if version is None:
                create_schema(db, POSTGRESQL)
                connection.execute(f"CREATE TABLE {VERSION_TABLE} (version INTEGER NOT NULL)")
                connection.execute(f"INSERT INTO {VERSION_TABLE} VALUES (%s)", (SCHEMA_VERSION,))
                log.info("accounts database %s: created mailforge's tables", self.name)
            elif version > SCHEMA_VERSION:
                raise UsageError(f"accounts database {self.name} has schema version {version}, "
                                 f"newer than this mailforge knows ({SCHEMA_VERSION}); "
                                 "upgrade mailforge")
            elif version < SCHEMA_VERSION:
                migrate(db, POSTGRESQL, version)
                connection.execute(f"UPDATE {VERSION_TABLE} SET version = %s", (SCHEMA_VERSION,))
        self._prepared.set()


def _version(connection: psycopg.Connection) -> int | None:
    """The schema version; None where the tables are not made yet."""
    (table,) = connection.execute("SELECT to_regclass(%s)", (VERSION_TABLE,)).fetchone()
    if table is None:
        return None
    return connection.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone()[0]
