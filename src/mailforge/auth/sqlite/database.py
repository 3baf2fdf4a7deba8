"""The accounts database file: hosted domains, mailboxes with their password hashes, aliases,
outbound limits and the store's settings, in SQLite.

WAL mode, so the workers' lookups never wait for the CLI's writes. `Database` is the file
opened once per process: one connection behind one lock, which every repository of the
SQLite backend (directory, credentials, sendlimits, mailboxsettings) is built on. Every
address and domain is stored in canonical form (`normalize_address`, `normalize_domain`), so
lookups are exact matches on indexed columns.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
from typing import Any, Iterator

from ...addresses import normalize_address, normalize_domain
from ...errors import MailforgeError, UsageError

# Bump whenever the schema changes, and add the step from the old version to _MIGRATIONS.
SCHEMA_VERSION = 7
# A writer (the CLI) holds the lock for milliseconds; wait rather than fail.
BUSY_TIMEOUT_MS = 5000
# Password hashes inside: no access for others. The group (which owns the store and queue, see
# DESIGN.md) keeps read-write, which WAL needs even for readers; SQLite gives the -wal and
# -shm files the database file's permissions.
DB_MODE = 0o660

# The web console's administrators (separate from mailboxes: an administrator has no mail),
# the domains a "domain" one manages, its logins and API tokens (by SHA-256 of the secret, so
# the file does not hold a usable one), and the audit trail of what they did.
_ADMIN_SCHEMA = (
    "CREATE TABLE admins (name TEXT PRIMARY KEY, password TEXT NOT NULL, role TEXT NOT NULL, "
    "created REAL NOT NULL) WITHOUT ROWID",
    "CREATE TABLE admin_domains (admin TEXT NOT NULL REFERENCES admins(name) ON DELETE CASCADE, "
    "domain TEXT NOT NULL, PRIMARY KEY (admin, domain)) WITHOUT ROWID",
    "CREATE TABLE admin_sessions (secret_hash TEXT PRIMARY KEY, admin TEXT NOT NULL "
    "REFERENCES admins(name) ON DELETE CASCADE, kind TEXT NOT NULL, csrf TEXT NOT NULL, "
    "created REAL NOT NULL, expires REAL) WITHOUT ROWID",
    "CREATE TABLE admin_audit (id INTEGER PRIMARY KEY, time REAL NOT NULL, admin TEXT NOT NULL, "
    "client TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL)",
)

_SCHEMA = """
CREATE TABLE domains (
    name     TEXT PRIMARY KEY,
    created  REAL NOT NULL,
    public_folders  INTEGER NOT NULL DEFAULT 0,
    public_writers  TEXT NOT NULL DEFAULT '*'
) WITHOUT ROWID;
CREATE TABLE mailboxes (
    address   TEXT PRIMARY KEY,
    domain    TEXT NOT NULL REFERENCES domains(name),
    password  TEXT NOT NULL,
    cram_md5  TEXT,
    scram_sha256 TEXT,
    disabled  INTEGER NOT NULL DEFAULT 0,
    created   REAL NOT NULL,
    quota_bytes     INTEGER,
    quota_messages  INTEGER,
    send_disabled INTEGER NOT NULL DEFAULT 0,
    apop_secret TEXT
);
CREATE INDEX mailboxes_domain ON mailboxes(domain);
CREATE TABLE aliases (
    source   TEXT NOT NULL,
    target   TEXT NOT NULL,
    domain   TEXT NOT NULL REFERENCES domains(name),
    created  REAL NOT NULL,
    PRIMARY KEY (source, target)
) WITHOUT ROWID;
CREATE INDEX aliases_domain ON aliases(domain);
CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE send_limits (
    scope     TEXT NOT NULL,
    name      TEXT NOT NULL,
    messages  INTEGER NOT NULL,
    interval  REAL NOT NULL,
    action    TEXT NOT NULL,
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;
"""

# The statements that take a file from schema version N (the key) to N + 1.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2: the CRAM-MD5 state beside the scrypt hash. Existing mailboxes get NULL, since the state
    # can only be made from the clear password: they cannot use CRAM-MD5 until `user passwd`
    # sets their password again.
    1: ("ALTER TABLE mailboxes ADD COLUMN cram_md5 TEXT",),
    # 3: the SCRAM-SHA-256 record, NULL for existing mailboxes for the same reason; and the
    # settings table for the key behind SCRAM's decoy salts (_ensure_decoy_key fills it).
    2: ("ALTER TABLE mailboxes ADD COLUMN scram_sha256 TEXT",
        "CREATE TABLE settings (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"),
    # 4: the store's settings. Quota limits per mailbox (NULL: none), and per domain whether
    # its public folders are shared and who may change them (PUBLIC_EVERYONE, PUBLIC_NOBODY
    # or a comma-separated list of addresses). Existing rows: no quota, no public folders.
    3: ("ALTER TABLE mailboxes ADD COLUMN quota_bytes INTEGER",
        "ALTER TABLE mailboxes ADD COLUMN quota_messages INTEGER",
        "ALTER TABLE domains ADD COLUMN public_folders INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE domains ADD COLUMN public_writers TEXT NOT NULL DEFAULT '*'"),
    # 5: outbound message limits (system, domain and user rows) and the flag that the
    # "disable" action sets on a mailbox that reached its limit.
    4: ("CREATE TABLE send_limits (scope TEXT NOT NULL, name TEXT NOT NULL, messages INTEGER "
        "NOT NULL, interval REAL NOT NULL, action TEXT NOT NULL, PRIMARY KEY (scope, name)) "
        "WITHOUT ROWID",
        "ALTER TABLE mailboxes ADD COLUMN send_disabled INTEGER NOT NULL DEFAULT 0"),
    # 6: the APOP secret of mailboxes whose owner asked for one (NULL: no APOP).
    5: ("ALTER TABLE mailboxes ADD COLUMN apop_secret TEXT",),
    # 7: the web console's administrators, sessions, API tokens and audit trail.
    6: _ADMIN_SCHEMA,
}
# The settings row holding the key that makes SCRAM decoy salts (passwords.scram_decoy).
DECOY_KEY = "scram_decoy_key"
DECOY_KEY_BYTES = 32


class Database:
    """One open accounts database. sqlite3 connections must not run statements from two threads
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
        with self._lock:
            yield self._connection

    def fetchone(self, sql: str, *params: object) -> Any:
        with self.read() as db:
            return db.execute(sql, params).fetchone()

    def fetchall(self, sql: str, *params: object) -> list[Any]:
        with self.read() as db:
            return db.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction that takes SQLite's write lock at the start: a deferred transaction
        that upgrades to a write later can fail with SQLITE_BUSY without waiting busy_timeout."""
        with self._lock:
            try:
                self._connection.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise MailforgeError(f"{self.path}: {exc}") from None
            try:
                yield self._connection
            except BaseException:
                # SQLite ends the transaction itself after some errors (a full disk).
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

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

    def _prepare(self, create: bool) -> None:
        self._connection.execute("PRAGMA foreign_keys = ON")
        if create:
            # WAL is a property of the file: set once, it holds for every later connection.
            self._connection.execute("PRAGMA journal_mode = WAL")
            with self.write() as db:
                # Checked inside the write transaction: two `init`s racing create it once.
                if _user_version(db) == 0:
                    for statement in (*filter(str.strip, _SCHEMA.split(";")), *_ADMIN_SCHEMA):
                        db.execute(statement)
                    _ensure_decoy_key(db)
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
            for version in range(_user_version(db), SCHEMA_VERSION):
                for statement in _MIGRATIONS[version]:
                    db.execute(statement)
            _ensure_decoy_key(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def exists(db: sqlite3.Connection, sql: str, *params: object) -> bool:
    return db.execute(sql, params).fetchone() is not None


def count(db: sqlite3.Connection, sql: str, *params: object) -> int:
    return db.execute(sql, params).fetchone()[0]


def is_domain(db: sqlite3.Connection, domain: str) -> bool:
    return exists(db, "SELECT 1 FROM domains WHERE name = ?", domain)


def is_mailbox(db: sqlite3.Connection, address: str) -> bool:
    return exists(db, "SELECT 1 FROM mailboxes WHERE address = ?", address)


def require_domain(db: sqlite3.Connection, domain: str) -> None:
    if not is_domain(db, domain):
        raise UsageError(f"domain {domain} is not hosted here (see `mailforge domain add`)")


def require_mailbox(db: sqlite3.Connection, address: str) -> None:
    if not is_mailbox(db, address):
        raise UsageError(f"no such mailbox: {address}")


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


def _ensure_decoy_key(db: sqlite3.Connection) -> None:
    db.execute("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)",
               (DECOY_KEY, secrets.token_bytes(DECOY_KEY_BYTES)))


def _user_version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]
