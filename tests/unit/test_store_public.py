"""Public folders (#public/) and the store's settings in the accounts database (schema 4)."""

import sqlite3

import pytest

from mailforge.auth.accounts import Accounts
from mailforge.auth.api import PUBLIC_NOBODY, StoreSettings
from mailforge.auth.sql import schema as accounts_schema
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
        db.directory.domain_add("example.test")
        db.directory.domain_add("other.test")
        for address in ("ann@example.test", "bob@example.test", "eve@other.test"):
            db.directory.user_add(address, "secret")
    return path


@pytest.fixture
def db(tmp_path, template):
    path = tmp_path / "accounts.sqlite3"
    path.write_bytes(template.read_bytes())
    with Accounts(path) as accounts:
        yield accounts


def test_public_folders_are_shared_within_the_domain(tmp_path, db):
    store = tmp_path / "store"
    ann = open_mailbox(store, db.mailbox_settings, "ann@example.test")
    assert not any(i.name.startswith("#public/") for i in ann.folders())
    with pytest.raises(FolderNotFound):
        ann.select("#public/News")
    db.mailbox_settings.set_public_folders("example.test", True)
    ann = open_mailbox(store, db.mailbox_settings, "ann@example.test")
    ann.create("#public/News/2024")
    ann.append("#public/News/2024", b"Subject: hello all\n\n")
    bob = open_mailbox(store, db.mailbox_settings, "bob@example.test")
    assert {"#public/News", "#public/News/2024"} <= {i.name for i in bob.folders()}
    shared = bob.select("#public/News/2024")
    shared.set_flags([1], [SEEN], FlagMode.ADD)
    assert ann.select("#public/News/2024").messages()[0].flags == {SEEN}  # flags are shared
    assert (public_path(store, "example.test") / ".News.2024" / "cur").is_dir()
    eve = open_mailbox(store, db.mailbox_settings, "eve@other.test")
    assert not any(i.name.startswith("#public/") for i in eve.folders())
    with pytest.raises(InvalidName):
        ann.rename("#public/News", "Mine")


def test_only_writers_change_public_folders(tmp_path, db):
    store = tmp_path / "store"
    db.mailbox_settings.set_public_folders("example.test", True, "ann@example.test")
    ann = open_mailbox(store, db.mailbox_settings, "ann@example.test")
    ann.create("#public/Board")
    ann.append("#public/Board", b"Subject: rules\n\n")
    bob = open_mailbox(store, db.mailbox_settings, "bob@example.test")
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
    db.mailbox_settings.set_public_folders("example.test", True, PUBLIC_NOBODY)
    with pytest.raises(NotPermitted):
        open_mailbox(store, db.mailbox_settings, "ann@example.test").append("#public/Board", b"x\n")
    with pytest.raises(UsageError):
        db.mailbox_settings.set_public_folders("example.test", True, "eve@other.test")


def test_store_settings_and_quota_limits(db):
    assert db.mailbox_settings.store_settings("ann@example.test") == StoreSettings()
    db.mailbox_settings.set_quota("ann@example.test", 1 << 20, 100)
    db.mailbox_settings.set_public_folders("example.test", True, "bob@example.test")
    assert db.mailbox_settings.store_settings("ann@example.test") == StoreSettings(
        1 << 20, 100, True, False, "bob@example.test")
    assert db.mailbox_settings.store_settings("bob@example.test").public_writer
    assert db.mailbox_settings.quota_limits("ann@example.test") == (1 << 20, 100)
    assert db.mailbox_settings.quota_limits("nobody@example.test") == (None, None)
    assert db.mailbox_settings.public_folders("example.test") == (True, "bob@example.test")
    with pytest.raises(UsageError):
        db.mailbox_settings.set_quota("ann@example.test", -1)
    with pytest.raises(UsageError):
        db.mailbox_settings.set_quota("nobody@example.test", 5)


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
        DROP TABLE admin_domains; DROP TABLE admin_sessions; DROP TABLE admin_audit;
        DROP TABLE admins; DROP TABLE nodes;
        PRAGMA user_version = 3;
    """)
    raw.close()
    with Accounts(path) as db:
        assert db.database.fetchone("PRAGMA user_version")[0] == accounts_schema.SCHEMA_VERSION
        assert db.mailbox_settings.store_settings("ann@example.test") == StoreSettings()
        db.mailbox_settings.set_quota("ann@example.test", 10)
        assert db.mailbox_settings.quota_limits("ann@example.test") == (10, None)
