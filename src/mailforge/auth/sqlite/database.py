"""The accounts database in one SQLite file (the default, for one node).

WAL mode, so the workers' lookups never wait for the CLI's writes. `Database` is the file
opened once per process: one connection behind one lock, under the repositories of auth/sql/.
The schema version is the file's PRAGMA user_version.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from typing import Iterator

from ...errors import MailforgeError, UsageError
from ..api import AccountsUnavailable
from ..sql import database as sql
from ..sql.schema import SCHEMA_VERSION, SQLITE, create_schema, migrate

# A writer (the CLI) holds the lock for milliseconds; wait rather than fail.
BUSY_TIMEOUT_MS = 5000
# Password hashes inside: no access for others. The group (which owns the store and queue, see
# DESIGN.md) keeps read-write, which WAL needs even for readers; SQLite gives the -wal and
# -shm files the database file's permissions.
DB_MODE = 0o660


class Database(sql.Database):
    """One open accounts file. sqlite3 connections must not run statements from two threads
    at once, and the worker's thread pool looks up accounts concurrently: every statement runs
    under the one lock."""

    def __init__(self, path: os.PathLike, *, create: bool = False) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        if create:
            _create_file(self.path)
        self._connection = _connect(self.path)
        try:
            self._prepare(create)
        except sqlite3.DatabaseError as exc:
            self._connection.close()
            raise MailforgeError(f"{self.path}: {exc}") from None
        except BaseException:
            self._connection.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection, for statements that only read (each its own implicit transaction)."""
        with self._lock, self._unavailable_on_error():
            yield self._connection

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction that takes SQLite's write lock at the start: a deferred transaction
        that upgrades to a write later can fail with SQLITE_BUSY without waiting busy_timeout."""
        with self._lock, self._unavailable_on_error():
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                # SQLite ends the transaction itself after some errors (a full disk).
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    @contextlib.contextmanager
    def _unavailable_on_error(self) -> Iterator[None]:
        """A locked, unreadable or full file: the question was not answered."""
        try:
            yield
        except sqlite3.Error as exc:
            raise AccountsUnavailable(f"{self.path}: {exc}") from None

    def _prepare(self, create: bool) -> None:
        self._connection.execute("PRAGMA foreign_keys = ON")
        if create:
            # WAL is a property of the file: set once, it holds for every later connection.
            self._connection.execute("PRAGMA journal_mode = WAL")
            with self.write() as db:
                # Checked inside the write transaction: two `init`s racing create it once.
                if _user_version(db) == 0:
                    create_schema(db, SQLITE)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        version = _user_version(self._connection)
        if version == 0:
            raise UsageError(f"{self.path} is not a mailforge accounts database")
        if version > SCHEMA_VERSION:
            raise UsageError(f"{self.path} has schema version {version}, newer than this "
                             f"mailforge knows ({SCHEMA_VERSION}); upgrade mailforge")
        if version < SCHEMA_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        """Bring an older file up to SCHEMA_VERSION in one transaction: all steps or none."""
        with self.write() as db:
            # Read again under the write lock: another process may have migrated meanwhile.
            migrate(db, SQLITE, _user_version(db))
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _create_file(path: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DB_MODE)
    except FileExistsError:
        return
    except OSError as exc:
        raise MailforgeError(f"cannot create accounts database {path}: {exc.strerror}") from None
    try:
        # Past the umask: an operator's usual 022 would take away the group's write access.
        os.fchmod(fd, DB_MODE)
    finally:
        os.close(fd)


def _connect(path: str) -> sqlite3.Connection:
    # mode=rw: a missing file is an error here, where plain connect() would create it.
    uri = "file:" + _uri_path(path) + "?mode=rw"
    try:
        # timeout= is SQLite's busy_timeout. isolation_level=None: transactions are explicit,
        # see Database.write.
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.OperationalError as exc:
        if not os.path.exists(path):
            raise UsageError(f"no accounts database at {path} "
                             "(run `mailforge init` first)") from None
        raise MailforgeError(f"cannot open {path}: {exc}") from None


def _uri_path(path: str) -> str:
    # In a URI "?" and "#" end the path and "%" starts an escape.
    return os.path.abspath(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def _user_version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]
