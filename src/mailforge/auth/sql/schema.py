"""The accounts schema and its migrations, one text for every backend: the few words that
differ between SQL dialects are {placeholders} that a `Dialect` fills in.

Both backends keep a schema version (SQLite in PRAGMA user_version, PostgreSQL in a table of
its own) and bring an older database up to SCHEMA_VERSION with the steps in MIGRATIONS.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from .database import Connection

# Bump whenever the schema changes, and add the step from the old version to MIGRATIONS.
SCHEMA_VERSION = 8
# The settings row holding the key that makes SCRAM decoy salts (passwords.scram_decoy).
DECOY_KEY = "scram_decoy_key"
DECOY_KEY_BYTES = 32

SCHEMA = """
CREATE TABLE domains (
    name     TEXT PRIMARY KEY,
    created  {real} NOT NULL,
    public_folders  INTEGER NOT NULL DEFAULT 0,
    public_writers  TEXT NOT NULL DEFAULT '*',
    node     TEXT
){without_rowid};
CREATE TABLE mailboxes (
    address   TEXT PRIMARY KEY,
    domain    TEXT NOT NULL REFERENCES domains(name),
    password  TEXT NOT NULL,
    cram_md5  TEXT,
    scram_sha256 TEXT,
    disabled  INTEGER NOT NULL DEFAULT 0,
    created   {real} NOT NULL,
    quota_bytes     {bigint},
    quota_messages  {bigint},
    send_disabled INTEGER NOT NULL DEFAULT 0,
    apop_secret TEXT,
    node      TEXT
);
CREATE INDEX mailboxes_domain ON mailboxes(domain);
CREATE TABLE aliases (
    source   TEXT NOT NULL,
    target   TEXT NOT NULL,
    domain   TEXT NOT NULL REFERENCES domains(name),
    created  {real} NOT NULL,
    PRIMARY KEY (source, target)
){without_rowid};
CREATE INDEX aliases_domain ON aliases(domain);
CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  {blob} NOT NULL
){without_rowid};
CREATE TABLE nodes (
    name       TEXT PRIMARY KEY,
    host       TEXT NOT NULL,
    imap_port  INTEGER NOT NULL,
    pop3_port  INTEGER NOT NULL,
    smtp_port  INTEGER NOT NULL,
    created    {real} NOT NULL
){without_rowid};
CREATE TABLE send_limits (
    scope     TEXT NOT NULL,
    name      TEXT NOT NULL,
    messages  INTEGER NOT NULL,
    interval  {real} NOT NULL,
    action    TEXT NOT NULL,
    PRIMARY KEY (scope, name)
){without_rowid};
"""

# The web console's administrators (separate from mailboxes: an administrator has no mail),
# the domains a "domain" one manages, its logins and API tokens (by SHA-256 of the secret, so
# the database does not hold a usable one), and the audit trail of what they did.
ADMIN_SCHEMA = (
    "CREATE TABLE admins (name TEXT PRIMARY KEY, password TEXT NOT NULL, role TEXT NOT NULL, "
    "created {real} NOT NULL){without_rowid}",
    "CREATE TABLE admin_domains (admin TEXT NOT NULL REFERENCES admins(name) ON DELETE CASCADE, "
    "domain TEXT NOT NULL, PRIMARY KEY (admin, domain)){without_rowid}",
    "CREATE TABLE admin_sessions (secret_hash TEXT PRIMARY KEY, admin TEXT NOT NULL "
    "REFERENCES admins(name) ON DELETE CASCADE, kind TEXT NOT NULL, csrf TEXT NOT NULL, "
    "created {real} NOT NULL, expires {real}){without_rowid}",
    "CREATE TABLE admin_audit (id {serial_key}, time {real} NOT NULL, admin TEXT NOT NULL, "
    "client TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL)",
)

# The statements that take a database from schema version N (the key) to N + 1.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2: the CRAM-MD5 state beside the scrypt hash. Existing mailboxes get NULL, since the state
    # can only be made from the clear password: they cannot use CRAM-MD5 until `user passwd`
    # sets their password again.
    1: ("ALTER TABLE mailboxes ADD COLUMN cram_md5 TEXT",),
    # 3: the SCRAM-SHA-256 record, NULL for existing mailboxes for the same reason; and the
    # settings table for the key behind SCRAM's decoy salts (ensure_decoy_key fills it).
    2: ("ALTER TABLE mailboxes ADD COLUMN scram_sha256 TEXT",
        "CREATE TABLE settings (name TEXT PRIMARY KEY, value {blob} NOT NULL){without_rowid}"),
    # 4: the store's settings. Quota limits per mailbox (NULL: none), and per domain whether
    # its public folders are shared and who may change them (PUBLIC_EVERYONE, PUBLIC_NOBODY
    # or a comma-separated list of addresses). Existing rows: no quota, no public folders.
    3: ("ALTER TABLE mailboxes ADD COLUMN quota_bytes {bigint}",
        "ALTER TABLE mailboxes ADD COLUMN quota_messages {bigint}",
        "ALTER TABLE domains ADD COLUMN public_folders INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE domains ADD COLUMN public_writers TEXT NOT NULL DEFAULT '*'"),
    # 5: outbound message limits (system, domain and user rows) and the flag that the
    # "disable" action sets on a mailbox that reached its limit.
    4: ("CREATE TABLE send_limits (scope TEXT NOT NULL, name TEXT NOT NULL, messages INTEGER "
        "NOT NULL, interval {real} NOT NULL, action TEXT NOT NULL, PRIMARY KEY (scope, name))"
        "{without_rowid}",
        "ALTER TABLE mailboxes ADD COLUMN send_disabled INTEGER NOT NULL DEFAULT 0"),
    # 6: the APOP secret of mailboxes whose owner asked for one (NULL: no APOP).
    5: ("ALTER TABLE mailboxes ADD COLUMN apop_secret TEXT",),
    # 7: the web console's administrators, sessions, API tokens and audit trail.
    6: ADMIN_SCHEMA,
    # 8: mailbox routing between the nodes of a cluster: the nodes and their internal ports,
    # a domain's default owner and a mailbox's own (NULL: none, served by whichever node
    # the session reaches, as before).
    7: ("CREATE TABLE nodes (name TEXT PRIMARY KEY, host TEXT NOT NULL, imap_port INTEGER NOT "
        "NULL, pop3_port INTEGER NOT NULL, smtp_port INTEGER NOT NULL, created {real} NOT NULL)"
        "{without_rowid}",
        "ALTER TABLE domains ADD COLUMN node TEXT",
        "ALTER TABLE mailboxes ADD COLUMN node TEXT"),
}
# The tables, parents first: the order a copy inserts in (auth.migrate). The console's logins,
# API tokens and audit trail stay behind: they belong to the database they were made in.
TABLES = ("nodes", "domains", "mailboxes", "aliases", "settings", "send_limits", "admins",
          "admin_domains")


@dataclass(frozen=True)
class Dialect:
    """The type names one SQL dialect spells its own way."""

    real: str           # a double-precision float (times): PostgreSQL's REAL has 24 bits
    bigint: str         # quotas in bytes pass 2**31
    blob: str
    without_rowid: str  # SQLite's clustered primary key; nothing elsewhere
    serial_key: str     # an integer primary key the database numbers itself

    def statements(self, text: str) -> list[str]:
        return [s.strip() for s in text.format(**vars(self)).split(";") if s.strip()]

    def statement(self, text: str) -> str:
        (one,) = self.statements(text)
        return one


SQLITE = Dialect(real="REAL", bigint="INTEGER", blob="BLOB", without_rowid=" WITHOUT ROWID",
                 serial_key="INTEGER PRIMARY KEY")
POSTGRESQL = Dialect(real="DOUBLE PRECISION", bigint="BIGINT", blob="BYTEA", without_rowid="",
                     serial_key="BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")


def create_schema(db: Connection, dialect: Dialect) -> None:
    for statement in (*dialect.statements(SCHEMA), *map(dialect.statement, ADMIN_SCHEMA)):
        db.execute(statement)
    ensure_decoy_key(db)


def migrate(db: Connection, dialect: Dialect, version: int) -> None:
    """The steps from `version` up to SCHEMA_VERSION, in the caller's transaction."""
    for step in range(version, SCHEMA_VERSION):
        for statement in MIGRATIONS[step]:
            db.execute(dialect.statement(statement))
    ensure_decoy_key(db)


def ensure_decoy_key(db: Connection) -> None:
    db.execute("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
               (DECOY_KEY, secrets.token_bytes(DECOY_KEY_BYTES)))
