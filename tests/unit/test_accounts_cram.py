"""The CRAM-MD5 state in the accounts database (schema 2) and the migration from schema 1."""

import hmac
import sqlite3
import time

import pytest

from mailforge.auth import passwords
from mailforge.auth.accounts import Accounts
from mailforge.auth.sql import schema as accounts_schema

CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"

# Schema 1 as it shipped, so that the migration test starts from a real old file.
SCHEMA_1 = """
CREATE TABLE domains (
    name     TEXT PRIMARY KEY,
    created  REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE mailboxes (
    address   TEXT PRIMARY KEY,
    domain    TEXT NOT NULL REFERENCES domains(name),
    password  TEXT NOT NULL,
    disabled  INTEGER NOT NULL DEFAULT 0,
    created   REAL NOT NULL
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
PRAGMA user_version = 1;
"""


pytestmark = pytest.mark.usefixtures("cheap_scrypt")


def digest(password: str, challenge: bytes = CHALLENGE) -> str:
    """What a client sends, computed without mailforge's code."""
    return hmac.new(password.encode(), challenge, "md5").hexdigest()


def stored_cram(db: Accounts, address: str) -> str | None:
    return db.database.fetchone("SELECT cram_md5 FROM mailboxes WHERE address = ?",
                                address)[0]


def test_user_add_stores_state_not_password(db):
    db.directory.user_add("bob@example.com", "tanstaaftanstaaf")
    stored = stored_cram(db, "bob@example.com")
    assert stored.startswith("$cram-md5$") and "tanstaaf" not in stored
    assert db.credentials.cram_md5_state("BOB@example.com") == passwords.cram_md5_state(stored)
    # RFC 2195 section 2's example, then a digest made by the standard library.
    assert db.credentials.verify_cram_md5("bob@example.com", CHALLENGE,
                                          "b913a602c7eda7a495b4e6e7334d3890")
    other = b"<42.1700000000@mx.example.com>"
    assert db.credentials.verify_cram_md5("Bob@Example.COM", other,
                                          digest("tanstaaftanstaaf", other))


def test_user_passwd_changes_state(db):
    db.directory.user_add("bob@example.com", "old")
    before = db.credentials.cram_md5_state("bob@example.com")
    db.credentials.user_passwd("bob@example.com", "pässwörd")
    assert db.credentials.cram_md5_state("bob@example.com") != before
    assert db.credentials.verify_cram_md5("bob@example.com", CHALLENGE, digest("pässwörd"))
    assert not db.credentials.verify_cram_md5("bob@example.com", CHALLENGE, digest("old"))
    assert db.credentials.check_password("bob@example.com", "pässwörd")


@pytest.mark.parametrize("response", [digest("wrong"), "", "b913", "z" * 32, "ü" * 32])
def test_wrong_or_malformed_digest_fails(db, response):
    db.directory.user_add("bob@example.com", "tanstaaftanstaaf")
    assert not db.credentials.verify_cram_md5("bob@example.com", CHALLENGE, response)


def test_unknown_disabled_and_invalid_addresses_fail(db):
    db.directory.user_add("bob@example.com", "pw")
    db.directory.user_disable("bob@example.com")
    for address in ("bob@example.com", "nobody@example.com", "not an address"):
        assert db.credentials.cram_md5_state(address) is None
        assert not db.credentials.verify_cram_md5(address, CHALLENGE, digest("pw"))
    db.directory.user_enable("bob@example.com")
    assert db.credentials.verify_cram_md5("bob@example.com", CHALLENGE, digest("pw"))


def test_decoy_state_never_authenticates(db):
    # The work for an unknown user uses a public all-zero state: a digest made from it must
    # still fail.
    from mailforge.speedups import cram_verify
    from mailforge.speedups.crammd5 import STATE_BYTES, _finish

    zero = bytes(STATE_BYTES)
    forged = _finish((0,) * 4, _finish((0,) * 4, CHALLENGE)).hex()
    assert cram_verify(zero, CHALLENGE, forged.encode())
    assert not db.credentials.verify_cram_md5("nobody@example.com", CHALLENGE, forged)


def test_corrupt_state_is_no_state(db):
    db.directory.user_add("bob@example.com", "pw")
    db.database.update_mailbox("bob@example.com", "cram_md5 = ?", "$cram-md5$00")
    assert db.credentials.cram_md5_state("bob@example.com") is None
    assert not db.credentials.verify_cram_md5("bob@example.com", CHALLENGE, digest("pw"))


@pytest.mark.parametrize("create", [False, True])
def test_migration_from_schema_1_keeps_users(tmp_path, create):
    path = tmp_path / "accounts.sqlite3"
    raw = sqlite3.connect(path)
    raw.executescript(SCHEMA_1)
    now = time.time()
    raw.execute("INSERT INTO domains VALUES ('example.com', ?)", (now,))
    raw.execute("INSERT INTO mailboxes (address, domain, password, disabled, created) "
                "VALUES ('bob@example.com', 'example.com', ?, 0, ?)",
                (passwords.hash_password("pw"), now))
    raw.execute("INSERT INTO aliases VALUES ('info@example.com', 'bob@example.com', "
                "'example.com', ?)", (now,))
    raw.commit()
    raw.close()

    with Accounts(path, create=create) as db:
        assert db.database.fetchone("PRAGMA user_version")[0] == accounts_schema.SCHEMA_VERSION
        assert [u.address for u in db.directory.users()] == ["bob@example.com"]
        assert db.directory.aliases() == [("info@example.com", "bob@example.com")]
        assert db.credentials.check_password("bob@example.com", "pw")
        # No clear password to make the state from: no CRAM-MD5 until it is set again.
        assert db.credentials.cram_md5_state("bob@example.com") is None
        assert not db.credentials.verify_cram_md5("bob@example.com", CHALLENGE, digest("pw"))
        db.credentials.user_passwd("bob@example.com", "pw")
        assert db.credentials.verify_cram_md5("bob@example.com", CHALLENGE, digest("pw"))
    # Migrated once: opening again finds schema 2 and changes nothing.
    with Accounts(path) as again:
        assert again.credentials.verify_cram_md5("bob@example.com", CHALLENGE, digest("pw"))
