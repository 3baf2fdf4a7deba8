"""The accounts database: hosted domains, mailboxes with their password hashes, and aliases.

SQLite in WAL mode, so the SMTP workers' lookups never wait for the CLI's writes. Every address
and domain is stored in canonical form (`normalize_address`, `normalize_domain`), so lookups are
exact matches on indexed columns.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from ..addresses import is_address_literal, normalize_address, normalize_domain
from ..errors import MailforgeError, UsageError
from .passwords import cram_md5_state as parse_cram_md5
from .passwords import ScramRecord, hash_cram_md5, hash_password, hash_scram_sha256
from .passwords import parse_scram_sha256, scram_decoy, verify_password

# Bump whenever the schema changes, and add the step from the old version to _MIGRATIONS.
SCHEMA_VERSION = 6
# A writer (the CLI) holds the lock for milliseconds; wait rather than fail.
BUSY_TIMEOUT_MS = 5000
# Password hashes inside: no access for others. The group (which owns the store and queue, see
# DESIGN.md) keeps read-write, which WAL needs even for readers; SQLite gives the -wal and
# -shm files the database file's permissions.
DB_MODE = 0o660
# Aliases that point at aliases: deep enough for lists of lists, bounded so that neither a long
# chain nor an alias loop (a -> b -> a) turns one RCPT into unbounded work.
MAX_ALIAS_DEPTH = 8

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
}
# public_writers values besides a list of addresses.
PUBLIC_EVERYONE = "*"
PUBLIC_NOBODY = ""
# The settings row holding the key that makes SCRAM decoy salts (passwords.scram_decoy).
DECOY_KEY = "scram_decoy_key"
DECOY_KEY_BYTES = 32

# The mailboxes an address reaches through aliases (itself included), with their disabled flag,
# each once, nearest first. UNION (not UNION ALL) keeps the rows per depth to the distinct
# addresses; the depth bound ends loops.
_REACH = """
WITH RECURSIVE reach(address, depth) AS (
    VALUES (?, 0)
    UNION
    SELECT aliases.target, reach.depth + 1
    FROM aliases JOIN reach ON aliases.source = reach.address
    WHERE reach.depth < ?
)
SELECT reach.address, mailboxes.disabled
FROM reach JOIN mailboxes ON mailboxes.address = reach.address
GROUP BY reach.address
ORDER BY MIN(reach.depth), reach.address
"""


@dataclass(frozen=True)
class UserInfo:
    address: str
    disabled: bool
    created: float


@dataclass(frozen=True)
class SendLimit:
    """An outbound message limit: at most `messages` per `interval` seconds per sender.

    scope is "system" (name ""), "domain" (name a domain) or "user" (name an address); the
    narrowest one that exists applies. action: "throttle" (451 until the window allows) or
    "disable" (the mailbox may not send until `user enable`).
    """

    scope: str
    name: str
    messages: int
    interval: float
    action: str


SEND_LIMIT_SCOPES = ("user", "domain", "system")  # narrowest first: the first found applies
SEND_LIMIT_ACTIONS = ("throttle", "disable")


@dataclass(frozen=True)
class StoreSettings:
    """What the mailbox store needs to know of an account (schema 4)."""

    quota_bytes: int | None = None
    quota_messages: int | None = None
    public_folders: bool = False   # the domain shares public folders
    public_writer: bool = False    # this account may change them


class RecipientStatus(enum.StrEnum):
    """What `lookup_recipient` found for an address."""

    OK = "ok"                # it reaches the Lookup's mailboxes (one at least)
    UNKNOWN = "unknown"      # no such address in our domains
    DISABLED = "disabled"    # every mailbox it reaches is disabled
    NOT_LOCAL = "not_local"  # the domain is not ours


@dataclass(frozen=True)
class Lookup:
    """Where mail to one address goes."""

    status: RecipientStatus
    mailboxes: list[str] = field(default_factory=list)


class Accounts:
    def __init__(self, path: os.PathLike, *, create: bool = False) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        if create:
            _create_file(self.path)
        self._db = _connect(self.path)
        try:
            self._prepare(create)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise MailforgeError(f"{self.path}: {exc}") from None
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Accounts:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- domains

    def domain_add(self, name: str) -> None:
        domain = normalize_domain(name)
        if is_address_literal(domain):
            raise UsageError(f"{domain} is an address literal, not a domain that can be hosted")
        with self._write() as db:
            if _exists(db, "SELECT 1 FROM domains WHERE name = ?", domain):
                raise UsageError(f"domain {domain} exists already")
            db.execute("INSERT INTO domains (name, created) VALUES (?, ?)", (domain, time.time()))

    def domain_remove(self, name: str) -> None:
        domain = normalize_domain(name)
        with self._write() as db:
            _require_domain(db, domain)
            mailboxes = _count(db, "SELECT COUNT(*) FROM mailboxes WHERE domain = ?", domain)
            aliases = _count(db, "SELECT COUNT(*) FROM aliases WHERE domain = ?", domain)
            if mailboxes or aliases:
                raise UsageError(f"domain {domain} still has {mailboxes} mailbox(es) and "
                                 f"{aliases} alias(es); remove them first")
            db.execute("DELETE FROM domains WHERE name = ?", (domain,))

    def domains(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT name FROM domains ORDER BY name")]

    def is_local_domain(self, domain: str) -> bool:
        try:
            domain = normalize_domain(domain)
        except UsageError:
            return False
        with self._lock:
            return _exists(self._db, "SELECT 1 FROM domains WHERE name = ?", domain)

    # -- mailboxes

    def user_add(self, address: str, password: str) -> None:
        address = normalize_address(address)
        hashed, cram, scram = _password_columns(password)
        domain = _domain_of(address)
        with self._write() as db:
            _require_domain(db, domain)
            if _is_mailbox(db, address):
                raise UsageError(f"mailbox {address} exists already")
            if _exists(db, "SELECT 1 FROM aliases WHERE source = ?", address):
                raise UsageError(f"{address} is an alias; remove the alias first")
            db.execute("INSERT INTO mailboxes (address, domain, password, cram_md5, "
                       "scram_sha256, created) VALUES (?, ?, ?, ?, ?, ?)",
                       (address, domain, hashed, cram, scram, time.time()))

    def user_passwd(self, address: str, password: str) -> None:
        self._update_mailbox(address, "password = ?, cram_md5 = ?, scram_sha256 = ?",
                             *_password_columns(password))

    def user_remove(self, address: str) -> None:
        address = normalize_address(address)
        with self._write() as db:
            _require_mailbox(db, address)
            db.execute("DELETE FROM mailboxes WHERE address = ?", (address,))

    def user_disable(self, address: str) -> None:
        self._update_mailbox(address, "disabled = ?", 1)

    def user_enable(self, address: str) -> None:
        """Undo `user_disable`, and a limit's "disable" action."""
        self._update_mailbox(address, "disabled = ?, send_disabled = ?", 0, 0)

    # -- APOP (RFC 1939 7)

    def set_apop_secret(self, address: str, secret: str | None) -> None:
        """APOP needs the secret itself on the server, so it is a secret of its own, set only
        for mailboxes whose clients need APOP, never the login password (None: no APOP)."""
        if secret is not None and not secret:
            raise UsageError("empty APOP secret refused")
        self._update_mailbox(address, "apop_secret = ?", secret)

    def verify_apop(self, address: str, timestamp: str, digest: str) -> bool:
        """Whether `digest` is MD5(timestamp + secret) in hex; False for an unknown, disabled or
        invalid address and for a mailbox without an APOP secret."""
        with self._lock:
            row = self._db.execute("SELECT apop_secret, disabled FROM mailboxes WHERE address = ?",
                                   (_login_address(address),)).fetchone()
        usable = row is not None and not row[1] and row[0] is not None
        # The same work whether or not the account exists: timing tells nothing.
        secret = row[0] if usable else secrets.token_hex(16)
        expected = hashlib.md5((timestamp + secret).encode()).hexdigest().encode()
        # As bytes: compare_digest refuses str with non-ASCII, which a client may send.
        claimed = digest.lower().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(expected, claimed) and usable

    # -- outbound message limits

    def limit_set(self, limit: SendLimit) -> None:
        if limit.scope not in SEND_LIMIT_SCOPES or limit.action not in SEND_LIMIT_ACTIONS:
            raise UsageError(f"bad limit {limit}")
        if limit.messages < 1 or limit.interval <= 0:
            raise UsageError("a limit needs at least 1 message and an interval above 0 seconds")
        with self._write() as db:
            if limit.scope == "domain":
                _require_domain(db, limit.name)
            elif limit.scope == "user":
                _require_mailbox(db, limit.name)
            db.execute("INSERT OR REPLACE INTO send_limits VALUES (?, ?, ?, ?, ?)",
                       (limit.scope, limit.name, limit.messages, limit.interval, limit.action))

    def limit_reset(self, scope: str, name: str = "") -> int:
        """Clear the settings below a level (system: every domain's and user's; domain: its
        users'), and a user's own setting for scope "user"; returns how many were removed."""
        with self._write() as db:
            if scope == "system":
                cursor = db.execute("DELETE FROM send_limits WHERE scope != 'system'")
            elif scope == "domain":
                _require_domain(db, name)
                cursor = db.execute("DELETE FROM send_limits WHERE scope = 'user' AND "
                                    "name IN (SELECT address FROM mailboxes WHERE domain = ?)",
                                    (name,))
            else:
                cursor = db.execute("DELETE FROM send_limits WHERE scope = 'user' AND name = ?",
                                    (name,))
            return cursor.rowcount

    def limits(self) -> list[SendLimit]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM send_limits ORDER BY scope DESC, name").fetchall()
        return [SendLimit(*row) for row in rows]

    def send_limit(self, address: str) -> SendLimit | None:
        """The limit that applies to a sender: its own, else its domain's, else the system's."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM send_limits WHERE (scope = 'user' AND name = ?) OR "
                "(scope = 'domain' AND name = ?) OR (scope = 'system' AND name = '')",
                (address, _domain_of(address))).fetchall()
        found = {row[0]: SendLimit(*row) for row in rows}
        return next((found[scope] for scope in SEND_LIMIT_SCOPES if scope in found), None)

    def send_disabled(self, address: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT send_disabled FROM mailboxes WHERE address = ?",
                                   (address,)).fetchone()
        return bool(row and row[0])

    def send_disable(self, address: str) -> None:
        self._update_mailbox(address, "send_disabled = ?", 1)

    def users(self, domain: str | None = None) -> list[UserInfo]:
        sql, params = "SELECT address, disabled, created FROM mailboxes", ()
        if domain is not None:
            sql, params = sql + " WHERE domain = ?", (self._known_domain(domain),)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY address", params).fetchall()
        return [UserInfo(address, bool(disabled), created) for address, disabled, created in rows]

    def check_password(self, address: str, password: str) -> bool:
        """For AUTH: False for a wrong password and for an unknown, disabled or invalid address."""
        with self._lock:
            row = self._db.execute("SELECT password, disabled FROM mailboxes WHERE address = ?",
                                   (_login_address(address),)).fetchone()
        if row is None or row[1]:
            # Spend the same time as a real check so that timing does not tell which
            # addresses exist.
            hash_password(password)
            return False
        return verify_password(password, row[0])

    def cram_md5_state(self, address: str) -> bytes | None:
        """For AUTH CRAM-MD5: the stored HMAC-MD5 state; None for an unknown, disabled or invalid
        address and for a mailbox without a (valid) state, see _MIGRATIONS."""
        with self._lock:
            row = self._db.execute("SELECT cram_md5, disabled FROM mailboxes WHERE address = ?",
                                   (_login_address(address),)).fetchone()
        if row is None or row[1] or row[0] is None:
            return None
        try:
            return parse_cram_md5(row[0])
        except ValueError:
            return None

    def verify_cram_md5(self, address: str, challenge: bytes, response_digest: str) -> bool:
        """For AUTH CRAM-MD5: whether `response_digest`, the client's hex HMAC-MD5 of
        `challenge`, is right; False whenever `cram_md5_state` is None."""
        # Imported here, as in passwords.hash_cram_md5: importing speedups may log a warning.
        from ..speedups import cram_verify
        from ..speedups.crammd5 import STATE_BYTES

        # Non-ASCII becomes "?", which is not hex, so the check fails rather than raises.
        response = response_digest.encode("ascii", "replace")
        state = self.cram_md5_state(address)
        if state is None:
            # Spend the same time as a real check so that timing does not tell which addresses
            # exist. The decoy state is public, so its result must not count.
            cram_verify(bytes(STATE_BYTES), challenge, response)
            return False
        return cram_verify(state, challenge, response)

    def scram_sha256(self, address: str) -> ScramRecord | None:
        """For AUTH SCRAM-SHA-256: the stored record; None for an unknown, disabled or invalid
        address and for a mailbox without a (valid) record, see _MIGRATIONS."""
        with self._lock:
            row = self._db.execute("SELECT scram_sha256, disabled FROM mailboxes "
                                   "WHERE address = ?", (_login_address(address),)).fetchone()
        if row is None or row[1] or row[0] is None:
            return None
        try:
            return parse_scram_sha256(row[0])
        except ValueError:
            return None

    def scram_decoy(self, username: str) -> ScramRecord:
        """What SCRAM-SHA-256 shows a client whose `username` has no record: the same salt on
        every attempt and in every worker, so a changing salt does not give away unknown users."""
        with self._lock:
            key = self._db.execute("SELECT value FROM settings WHERE name = ?",
                                   (DECOY_KEY,)).fetchone()[0]
        return scram_decoy(key, _login_address(username) or username)

    # -- aliases

    def alias_add(self, source: str, target: str) -> None:
        source, target = normalize_address(source), normalize_address(target)
        if source == target:
            raise UsageError(f"alias {source} cannot point at itself")
        domain = _domain_of(source)
        with self._write() as db:
            _require_domain(db, domain)
            if _is_mailbox(db, source):
                raise UsageError(f"{source} is a mailbox; an alias source must not be one")
            if _exists(db, "SELECT 1 FROM aliases WHERE source = ? AND target = ?", source, target):
                raise UsageError(f"alias {source} -> {target} exists already")
            self._check_target(db, target)
            db.execute("INSERT INTO aliases (source, target, domain, created) VALUES (?, ?, ?, ?)",
                       (source, target, domain, time.time()))

    def alias_remove(self, source: str, target: str | None = None) -> None:
        """Remove one target of `source`, or with no target, the whole alias."""
        source = normalize_address(source)
        sql, params = "DELETE FROM aliases WHERE source = ?", (source,)
        if target is not None:
            sql, params = sql + " AND target = ?", (source, normalize_address(target))
        with self._write() as db:
            if db.execute(sql, params).rowcount == 0:
                what = f"{source} -> {params[1]}" if target is not None else source
                raise UsageError(f"no such alias: {what}")

    def aliases(self, domain: str | None = None) -> list[tuple[str, str]]:
        sql, params = "SELECT source, target FROM aliases", ()
        if domain is not None:
            sql, params = sql + " WHERE domain = ?", (self._known_domain(domain),)
        with self._lock:
            return self._db.execute(sql + " ORDER BY source, target", params).fetchall()

    # -- delivery

    def lookup_recipient(self, address: str) -> Lookup:
        """Where mail to `address` goes; AddressError if it is not an address.

        Two indexed queries: the domain, then the recursive alias walk joined to the mailboxes.
        Alias targets outside our domains are left out of `mailboxes` until remote relay
        exists; an address that reaches only such targets is UNKNOWN, so that SMTP refuses
        mail it could not deliver rather than accepting and dropping it.
        """
        address = normalize_address(address)
        with self._lock:
            if not _exists(self._db, "SELECT 1 FROM domains WHERE name = ?", _domain_of(address)):
                return Lookup(RecipientStatus.NOT_LOCAL)
            rows = self._db.execute(_REACH, (address, MAX_ALIAS_DEPTH)).fetchall()
        mailboxes = [mailbox for mailbox, disabled in rows if not disabled]
        if mailboxes:
            return Lookup(RecipientStatus.OK, mailboxes)
        return Lookup(RecipientStatus.DISABLED if rows else RecipientStatus.UNKNOWN)

    # -- store settings

    def set_quota(self, address: str, limit_bytes: int | None,
                  limit_messages: int | None = None) -> None:
        for limit in (limit_bytes, limit_messages):
            if limit is not None and limit < 0:
                raise UsageError("a quota cannot be negative")
        self._update_mailbox(address, "quota_bytes = ?, quota_messages = ?",
                             limit_bytes, limit_messages)

    def quota_limits(self, address: str) -> tuple[int | None, int | None]:
        """(bytes, messages) limits of a canonical address; (None, None) when unknown."""
        with self._lock:
            row = self._db.execute("SELECT quota_bytes, quota_messages FROM mailboxes "
                                   "WHERE address = ?", (address,)).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def set_public_folders(self, domain: str, enabled: bool, writers: str | None = None) -> None:
        """Share (or stop sharing) a domain's public folders; `writers` is PUBLIC_EVERYONE,
        PUBLIC_NOBODY or comma-separated addresses of the domain (None: leave as it is)."""
        domain = normalize_domain(domain)
        with self._write() as db:
            _require_domain(db, domain)
            if writers is not None:
                writers = _public_writers(writers, domain)
                db.execute("UPDATE domains SET public_writers = ? WHERE name = ?",
                           (writers, domain))
            db.execute("UPDATE domains SET public_folders = ? WHERE name = ?",
                       (int(enabled), domain))

    def public_folders(self, domain: str) -> tuple[bool, str]:
        """(enabled, writers) of a hosted domain."""
        domain = self._known_domain(domain)
        with self._lock:
            enabled, writers = self._db.execute(
                "SELECT public_folders, public_writers FROM domains WHERE name = ?",
                (domain,)).fetchone()
        return bool(enabled), writers

    def store_settings(self, address: str) -> StoreSettings:
        """Quota and public-folder rights of a canonical mailbox address, in one query."""
        with self._lock:
            row = self._db.execute(
                "SELECT quota_bytes, quota_messages, public_folders, public_writers "
                "FROM mailboxes JOIN domains ON domains.name = mailboxes.domain "
                "WHERE address = ?", (address,)).fetchone()
        if row is None:
            return StoreSettings()
        quota_bytes, quota_messages, public, writers = row
        writer = writers == PUBLIC_EVERYONE or address in writers.split(",")
        return StoreSettings(quota_bytes, quota_messages, bool(public), bool(public) and writer)

    # -- helpers

    def _prepare(self, create: bool) -> None:
        self._db.execute("PRAGMA foreign_keys = ON")
        if create:
            # WAL is a property of the file: set once, it holds for every later connection.
            self._db.execute("PRAGMA journal_mode = WAL")
            with self._write() as db:
                # Checked inside the write transaction: two `init`s racing create it once.
                if _user_version(db) == 0:
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        db.execute(statement)
                    _ensure_decoy_key(db)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        version = _user_version(self._db)
        if version == 0:
            raise UsageError(f"{self.path} is not a mailforge accounts database")
        if version > SCHEMA_VERSION:
            raise UsageError(f"{self.path} has schema version {version}, newer than this "
                             f"mailforge knows ({SCHEMA_VERSION}); upgrade mailforge")
        if version < SCHEMA_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        """Bring an older file up to SCHEMA_VERSION in one transaction: all steps or none."""
        with self._write() as db:
            # Read again under the write lock: another process may have migrated meanwhile.
            for version in range(_user_version(db), SCHEMA_VERSION):
                for statement in _MIGRATIONS[version]:
                    db.execute(statement)
            _ensure_decoy_key(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction that takes SQLite's write lock at the start: a deferred transaction
        that upgrades to a write later can fail with SQLITE_BUSY without waiting busy_timeout."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise MailforgeError(f"{self.path}: {exc}") from None
            try:
                yield self._db
            except BaseException:
                # SQLite ends the transaction itself after some errors (a full disk).
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _update_mailbox(self, address: str, assignments: str, *values: object) -> None:
        address = normalize_address(address)
        with self._write() as db:
            _require_mailbox(db, address)
            db.execute(f"UPDATE mailboxes SET {assignments} WHERE address = ?", (*values, address))

    def _known_domain(self, name: str) -> str:
        domain = normalize_domain(name)
        with self._lock:
            _require_domain(self._db, domain)
        return domain

    def _check_target(self, db: sqlite3.Connection, target: str) -> None:
        """A target in one of our domains must exist, which catches typos; one elsewhere is
        taken on trust."""
        if not _exists(db, "SELECT 1 FROM domains WHERE name = ?", _domain_of(target)):
            return
        if not (_is_mailbox(db, target)
                or _exists(db, "SELECT 1 FROM aliases WHERE source = ?", target)):
            raise UsageError(f"alias target {target} is neither a mailbox nor an alias")


def _public_writers(writers: str, domain: str) -> str:
    if writers in (PUBLIC_EVERYONE, PUBLIC_NOBODY):
        return writers
    addresses = [normalize_address(a) for a in writers.split(",") if a.strip()]
    for address in addresses:
        if _domain_of(address) != domain:
            raise UsageError(f"{address} is not in {domain}: only its own mailboxes can write "
                             "to a domain's public folders")
    return ",".join(addresses)


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
        # see Accounts._write.
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


def _password_columns(password: str) -> tuple[str, str, str | None]:
    """The scrypt hash, the CRAM-MD5 state and the SCRAM-SHA-256 record. The state is
    password-equivalent for CRAM-MD5 and, being unsalted MD5, far cheaper to attack than the
    hash: DB_MODE guards them all."""
    if not password:
        raise UsageError("empty password refused")
    try:
        scram = hash_scram_sha256(password)
    except ValueError:
        # SASLprep refuses it (a control character, say): SCRAM clients would refuse it too,
        # so this mailbox logs in with the other mechanisms only.
        scram = None
    return hash_password(password), hash_cram_md5(password), scram


def _ensure_decoy_key(db: sqlite3.Connection) -> None:
    db.execute("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)",
               (DECOY_KEY, secrets.token_bytes(DECOY_KEY_BYTES)))


def _login_address(address: str) -> str:
    """The canonical form, or "" (which matches no mailbox) for what is not an address."""
    try:
        return normalize_address(address)
    except UsageError:
        return ""


def _user_version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def _exists(db: sqlite3.Connection, sql: str, *params: object) -> bool:
    return db.execute(sql, params).fetchone() is not None


def _count(db: sqlite3.Connection, sql: str, *params: object) -> int:
    return db.execute(sql, params).fetchone()[0]


def _is_mailbox(db: sqlite3.Connection, address: str) -> bool:
    return _exists(db, "SELECT 1 FROM mailboxes WHERE address = ?", address)


def _require_domain(db: sqlite3.Connection, domain: str) -> None:
    if not _exists(db, "SELECT 1 FROM domains WHERE name = ?", domain):
        raise UsageError(f"domain {domain} is not hosted here (see `mailforge domain add`)")


def _require_mailbox(db: sqlite3.Connection, address: str) -> None:
    if not _is_mailbox(db, address):
        raise UsageError(f"no such mailbox: {address}")
