"""Public folders (#public/) and the store's settings in the accounts database (schema 4)."""

import sqlite3

import pytest

from mailforge.auth import accounts as accounts_module
from mailforge.auth.accounts import PUBLIC_NOBODY, Accounts, StoreSettings
from mailforge.errors import UsageError
from mailforge.store.api import (
    SEEN,
    FlagMode,
    FolderNotFound,
    InvalidName,
    NotPermitted,
)
from mailforge.store.folders import open_mailbox
from mailforge.store.maildir import public_path


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("accounts") / "accounts.sqlite3"
    with Accounts(path, create=True) as db:
        db.domain_add("example.test")
        db.domain_add("other.test")
        for address in ("ann@example.test", "bob@example.test", "eve@other.test"):
            db.user_add(address, "secret")
    return path


@pytest.fixture
def db(tmp_path, template):
    path = tmp_path / "accounts.sqlite3"
    path.write_bytes(template.read_bytes())
    with Accounts(path) as accounts:
        yield accounts


def test_public_folders_are_shared_within_the_domain(tmp_path, db):
    store = tmp_path / "store"
    ann = open_mailbox(store, db, "ann@example.test")
    assert not any(i.name.startswith("#public/") for i in ann.folders())
    with pytest.raises(FolderNotFound):
        ann.select("#public/News")
    db.set_public_folders("example.test", True)
    ann = open_mailbox(store, db, "ann@example.test")
    ann.create("#public/News/2024")
    ann.append("#public/News/2024", b"Subject: hello all\n\n")
    bob = open_mailbox(store, db, "bob@example.test")
    assert {"#public/News", "#public/News/2024"} <= {i.name for i in bob.folders()}
    shared = bob.select("#public/News/2024")
    shared.set_flags([1], [SEEN], FlagMode.ADD)
    assert ann.select("#public/News/2024").messages()[0].flags == {SEEN}  # flags are shared
    assert (public_path(store, "example.test") / ".News.2024" / "cur").is_dir()
    eve = open_mailbox(store, db, "eve@other.test")
    assert not any(i.name.startswith("#public/") for i in eve.folders())
    with pytest.raises(InvalidName):
        ann.rename("#public/News", "Mine")


def test_only_writers_change_public_folders(tmp_path, db):
    store = tmp_path / "store"
    db.set_public_folders("example.test", True, "ann@example.test")
    ann = open_mailbox(store, db, "ann@example.test")
    ann.create("#public/Board")
    ann.append("#public/Board", b"Subject: rules\n\n")
    bob = open_mailbox(store, db, "bob@example.test")
    board = bob.select("#public/Board")
    assert board.read_only
    assert board.set_flags([1], [SEEN], FlagMode.ADD)[0].flags == frozenset()
    for action in (lambda: bob.append("#public/Board", b"x\n"),
                   lambda: bob.create("#public/Mine"),
                   lambda: bob.delete("#public/Board"),
                   lambda: bob.select("INBOX").copy([], "#public/Board")):
        with pytest.raises(NotPermitted):
            action()
    assert bob.select("#public/Board").read(1) == b"Subject: rules\r\n\r\n"
    db.set_public_folders("example.test", True, PUBLIC_NOBODY)
    with pytest.raises(NotPermitted):
        open_mailbox(store, db, "ann@example.test").append("#public/Board", b"x\n")
    with pytest.raises(UsageError):
        db.set_public_folders("example.test", True, "eve@other.test")


def test_store_settings_and_quota_limits(db):
    assert db.store_settings("ann@example.test") == StoreSettings()
    db.set_quota("ann@example.test", 1 << 20, 100)
    db.set_public_folders("example.test", True, "bob@example.test")
    assert db.store_settings("ann@example.test") == StoreSettings(1 << 20, 100, True, False)
    assert db.store_settings("bob@example.test").public_writer
    assert db.quota_limits("ann@example.test") == (1 << 20, 100)
    assert db.quota_limits("nobody@example.test") == (None, None)
    assert db.public_folders("example.test") == (True, "bob@example.test")
    with pytest.raises(UsageError):
        db.set_quota("ann@example.test", -1)
    with pytest.raises(UsageError):
        db.set_quota("nobody@example.test", 5)


def test_schema_3_migrates_to_the_current_one(tmp_path, template):
    path = tmp_path / "accounts.sqlite3"
    path.write_bytes(template.read_bytes())
    raw = sqlite3.connect(path)
    raw.executescript("""
        CREATE TABLE m AS SELECT address, domain, password, cram_md5, scram_sha256, disabled,
                                 created FROM mailboxes;
        DROP TABLE mailboxes; ALTER TABLE m RENAME TO mailboxes;
        CREATE TABLE d (name TEXT PRIMARY KEY, created REAL NOT NULL) WITHOUT ROWID;
        INSERT INTO d SELECT name, created FROM domains;
        DROP TABLE domains; ALTER TABLE d RENAME TO domains;
        DROP TABLE send_limits;
        PRAGMA user_version = 3;
    """)
    raw.close()
    with Accounts(path) as db:
        assert db._db.execute("PRAGMA user_version").fetchone()[0] == accounts_module.SCHEMA_VERSION
        assert db.store_settings("ann@example.test") == StoreSettings()
        db.set_quota("ann@example.test", 10)
        assert db.quota_limits("ann@example.test") == (10, None)
