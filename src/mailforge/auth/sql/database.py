"""What the repositories (directory, credentials, sendlimits, mailboxsettings) ask of a
database, whichever backend holds it: a `Connection` for statements in the one SQL both
SQLite and PostgreSQL understand, with "?" placeholders, and the `Database` base class that
hands it out for reads and for write transactions.

A backend turns every failure of its driver (a lost connection, a locked or unreadable file)
into auth.api.AccountsUnavailable, so that consumers answer with a temporary error. Every
address and domain is stored in canonical form (`normalize_address`, `normalize_domain`), so
lookups are exact matches on indexed columns.
"""

from __future__ import annotations

from typing import Any, ContextManager, Protocol, Sequence

from ...addresses import normalize_address, normalize_domain
from ...errors import UsageError


# The largest numbers the columns hold in both backends: BIGINT, and INTEGER (PostgreSQL's is
# 32-bit). A larger one is the asker's mistake, refused as such; handed to the driver it fails
# as an OverflowError (a traceback) or a database error (read as "the database is unavailable").
MAX_BIGINT = 2**63 - 1
MAX_INTEGER = 2**31 - 1


class Cursor(Protocol):
    rowcount: int
    description: Any  # a sequence of columns, each with its name first (DB-API)

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor: ...


class Database:
    """A backend's open accounts database. Subclasses give `read` (statements that only read,
    each on its own) and `write` (one transaction, one writer at a time: checks and changes
    of the CLI see no other writer between them), `ready` and `close`."""

    def read(self) -> ContextManager[Connection]:
        raise NotImplementedError

    def write(self) -> ContextManager[Connection]:
        raise NotImplementedError

    def ready(self) -> None:
        """Raise what keeps the database from answering now (AccountsUnavailable, a schema
        problem), for `check-config`."""

    def close(self) -> None:
        raise NotImplementedError

    def fetchone(self, sql: str, *params: object) -> Any:
        with self.read() as db:
            return db.execute(sql, params).fetchone()

    def fetchall(self, sql: str, *params: object) -> list[Any]:
        with self.read() as db:
            return db.execute(sql, params).fetchall()

    def update_mailbox(self, address: str, assignments: str, *values: object) -> None:
        """Set columns of an existing mailbox (`assignments`: "column = ?, ...")."""
        address = normalize_address(address)
        with self.write() as db:
            require_mailbox(db, address)
            db.execute(f"UPDATE mailboxes SET {assignments} WHERE address = ?", (*values, address))

    def known_domain(self, name: str) -> str:
        """The canonical form of a hosted domain; UsageError for one that is not hosted."""
        domain = normalize_domain(name)
        with self.read() as db:
            require_domain(db, domain)
        return domain

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def exists(db: Connection, sql: str, *params: object) -> bool:
    return db.execute(sql, params).fetchone() is not None


def count(db: Connection, sql: str, *params: object) -> int:
    return db.execute(sql, params).fetchone()[0]


def is_domain(db: Connection, domain: str) -> bool:
    return exists(db, "SELECT 1 FROM domains WHERE name = ?", domain)


def is_mailbox(db: Connection, address: str) -> bool:
    return exists(db, "SELECT 1 FROM mailboxes WHERE address = ?", address)


def require_domain(db: Connection, domain: str) -> None:
    if not is_domain(db, domain):
        raise UsageError(f"domain {domain} is not hosted here (see `mailforge domain add`)")


def require_mailbox(db: Connection, address: str) -> None:
    if not is_mailbox(db, address):
        raise UsageError(f"no such mailbox: {address}")
